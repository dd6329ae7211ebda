"""Exactly what comes out of each format: content only, tables as rows, PDF text re-flowed.

Every file is written here by the library that writes that format (fpdf2, python-docx,
python-pptx, openpyxl) or as text (HTML in the shapes three documentation generators produce,
Markdown, plain text, e-mail), and the test states the blocks it must give, word for word.
"""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

from ingestion.chunking import chunk_document
from ingestion.parsing import DOCX, EMAIL, HTML, MARKDOWN, PDF, PPTX, TEXT, XLSX, Block, parse


def blocks(path: Path, content_type: str) -> list[tuple]:
    return [(b.kind, b.text) for b in parse(path, content_type).blocks]


# --- HTML: navigation judged by structure ---------------------------------------------------------
DOCBOOK_PAGE = """<!DOCTYPE html><html><head><title>13.3. Explicit Locking</title></head><body>
<div class="navheader"><table width="100%" summary="Navigation header">
<tr><th colspan="5" align="center">13.3. Explicit Locking</th></tr>
<tr><td><a accesskey="p" href="iso.html">Prev</a></td><td><a accesskey="u" href="mvcc.html">Up</a>
</td><th>Chapter 13. Concurrency Control</th><td><a accesskey="h" href="index.html">Home</a></td>
<td><a accesskey="n" href="next.html">Next</a></td></tr></table><hr></div>
<div class="sect1"><h2>13.3. Explicit Locking <a href="#LOCKING" class="id_link">#</a></h2>
<p>Lock modes control concurrent access to data in tables. See <a href="lock.html">LOCK</a> and
<a href="x.html">Section 13.3.1</a>.</p>
<div class="toc"><dl class="toc"><dt><a href="#T">13.3.1. Table-Level Locks</a></dt>
<dt><a href="#R">13.3.2. Row-Level Locks</a></dt><dt><a href="#P">13.3.3. Page Locks</a></dt></dl></div>
<table border="1"><thead><tr><th>Requested Lock Mode</th><th>ACCESS SHARE</th><th>EXCLUSIVE</th></tr>
</thead><tbody><tr><td>ROW SHARE</td><td></td><td>X</td></tr>
<tr><td>EXCLUSIVE</td><td>X</td><td>X</td></tr></tbody></table>
<pre>LOCK TABLE films IN SHARE MODE;
SELECT 1;</pre>
</div>
<div class="navfooter"><hr><table width="100%" summary="Navigation footer"><tr>
<td><a accesskey="p" href="iso.html">Prev</a></td><td><a accesskey="u" href="mvcc.html">Up</a></td>
<td><a accesskey="n" href="next.html">Next</a></td></tr><tr><td>13.2. Transaction Isolation</td>
<td><a accesskey="h" href="index.html">Home</a></td><td>13.4. Data Consistency Checks</td></tr>
</table></div></body></html>"""


def test_a_docbook_page_loses_its_prev_up_next_home_bars_and_keeps_its_content(tmp_path):
    page = tmp_path / "explicit-locking.html"
    page.write_text(DOCBOOK_PAGE)

    assert blocks(page, HTML) == [
        ("heading", "13.3. Explicit Locking"),
        (
            "text",
            "Lock modes control concurrent access to data in tables. See LOCK and Section 13.3.1.",
        ),
        (
            "table",
            "Requested Lock Mode | ACCESS SHARE | EXCLUSIVE\nROW SHARE | | X\nEXCLUSIVE | X | X",
        ),
        ("text", "LOCK TABLE films IN SHARE MODE;\nSELECT 1;"),
    ]


TEXINFO_PAGE = """<html><body><div class="section" id="Thread-Safety"><div class="header"><p>
Previous: <a href="Closure.html" accesskey="p" rel="prev">Closure Example</a>, Up:
<a href="Using.html" accesskey="u" rel="up">Using libffi</a> &nbsp; [<a href="Index.html"
title="Index" rel="index">Index</a>]</p></div><hr><h3 class="section">2.7 Thread Safety</h3>
<p><code>libffi</code> is not completely thread-safe.</p>
<dl><dt><code>ffi_prep_cif</code></dt><dd>May modify the <code>ffi_type</code> objects.</dd></dl>
</div></body></html>"""


def test_a_texinfo_page_loses_its_previous_up_line(tmp_path):
    page = tmp_path / "Thread-Safety.html"
    page.write_text(TEXINFO_PAGE)

    assert blocks(page, HTML) == [
        ("heading", "2.7 Thread Safety"),
        ("text", "libffi is not completely thread-safe."),
        ("text", "ffi_prep_cif"),
        ("list", "May modify the ffi_type objects."),
    ]


THEMED_PAGE = """<html><body>
<div class="top"><a href="/">Docs</a> <a href="/guide/">Guide</a> <a href="/api/">API</a>
<a href="/blog/">Blog</a></div>
<main>
<div class="crumbs"><a href="/">Home</a> &raquo; <a href="/guide/">Guide</a> &raquo;
<a href="/guide/setup/">Setup</a> &raquo; Install</div>
<h1>Install</h1>
<p>Run the installer with <a href="/cli/">the command line tool</a>.</p>
<p>See also: <a href="/a/">Upgrading</a>, <a href="/b/">Removing</a>.</p>
<p>For tutorials, please see</p><ul><li><a href="/t1">Basics</a></li><li><a href="/t2">Advanced</a>
</li><li><a href="/t3">Cookbook</a></li></ul>
<table><tr><th>Old</th><th>New</th></tr><tr><td><a href="/o1">os.path.isdir()</a></td>
<td><a href="/n1">Path.is_dir()</a></td></tr></table>
<ul><li><a href="/guide/linux/">Installing on Linux servers with systemd</a></li>
<li><a href="/guide/mac/">Installing on a Mac laptop with Homebrew</a></li>
<li><a href="/guide/win/">Installing on Windows with the MSI package</a></li></ul>
<aside class="footnote" role="note"><p>[1] The installer needs 2 GB of disk.</p></aside>
<div class="pager"><a href="/prev/">&laquo; Previous</a> | <a href="/next/">Next &raquo;</a> |
<a href="/top/">Top</a></div>
</main>
<div class="foot"><a href="/privacy/">Privacy</a> <a href="/terms/">Terms</a></div>
</body></html>"""


def test_breadcrumbs_and_pager_inside_main_go_but_descriptive_links_and_footnotes_stay(tmp_path):
    page = tmp_path / "install.html"
    page.write_text(THEMED_PAGE)

    assert blocks(page, HTML) == [
        ("heading", "Install"),
        ("text", "Run the installer with the command line tool."),
        ("text", "See also: Upgrading, Removing."),
        ("text", "For tutorials, please see"),
        ("list", "Basics"),
        ("list", "Advanced"),
        ("list", "Cookbook"),
        ("table", "Old | New\nos.path.isdir() | Path.is_dir()"),
        ("list", "Installing on Linux servers with systemd"),
        ("list", "Installing on a Mac laptop with Homebrew"),
        ("list", "Installing on Windows with the MSI package"),
        ("text", "[1] The installer needs 2 GB of disk."),
    ]


def test_a_page_that_is_only_links_is_still_indexed(tmp_path):
    page = tmp_path / "sitemap.html"
    page.write_text(
        '<html><body><ul><li><a href="/a">Alpha</a></li><li><a href="/b">Beta</a></li>'
        '<li><a href="/c">Gamma</a></li></ul></body></html>'
    )

    assert blocks(page, HTML) == [("list", "Alpha"), ("list", "Beta"), ("list", "Gamma")]


# --- tables --------------------------------------------------------------------------------------
def test_a_workbook_gives_each_sheet_a_heading_and_one_row_a_line(tmp_path):
    from openpyxl import Workbook

    workbook = Workbook()
    prices = workbook.active
    prices.title = "Prices"
    for row in [["Item", "Price", "Notes"], ["Tea", 2.5, "per cup"], ["Cake", 4, None]]:
        prices.append(row)
    staff = workbook.create_sheet("Staff")
    staff.append(["Name", "Role"])
    staff.append(["Ada", "Engineer"])
    path = tmp_path / "book.xlsx"
    workbook.save(path)

    parsed = parse(path, XLSX)

    assert [(b.kind, b.text, b.header) for b in parsed.blocks] == [
        ("heading", "Prices", ""),
        ("table", "Item | Price | Notes\nTea | 2.5 | per cup\nCake | 4 |", "Item | Price | Notes"),
        ("heading", "Staff", ""),
        ("table", "Name | Role\nAda | Engineer", "Name | Role"),
    ]


def test_a_word_table_becomes_rows_with_its_first_row_as_header(tmp_path):
    import docx

    document = docx.Document()
    document.add_heading("Limits", level=1)
    table = document.add_table(rows=3, cols=3)
    for r, row in enumerate([["Setting", "Default", "Maximum"], ["Upload", "100 MB", "1 GB"]]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    for c, value in enumerate(["Files per upload", "500", "5000"]):
        table.cell(2, c).text = value
    path = tmp_path / "limits.docx"
    document.save(path)

    parsed = parse(path, DOCX)

    assert [(b.kind, b.text, b.header) for b in parsed.blocks] == [
        ("heading", "Limits", ""),
        (
            "table",
            "Setting | Default | Maximum\nUpload | 100 MB | 1 GB\nFiles per upload | 500 | 5000",
            "Setting | Default | Maximum",
        ),
    ]


def test_every_chunk_of_a_long_table_starts_with_its_header_row():
    rows = [f"setting_{i} | {i} MB | limit number {i}" for i in range(60)]
    header = "Name | Value | Notes"
    table = Block("\n".join([header, *rows]), "table", page=4, header=header)

    def words(text: str) -> int:
        return len(text.split())

    chunks = chunk_document(
        ParsedDocument_with([table]), words, max_tokens=60, overlap_tokens=0, model_max_tokens=256
    )

    assert len(chunks) > 3
    assert all(c.text.splitlines()[0] == header for c in chunks)
    assert all(words(c.text) <= 60 and c.page_start == 4 for c in chunks)
    body = [line for c in chunks for line in c.text.splitlines()[1:]]
    assert body == rows  # every row once, in order, none cut


def ParsedDocument_with(items: list[Block]):  # noqa: N802 (reads as a constructor)
    from ingestion.parsing import ParsedDocument

    return ParsedDocument(blocks=items, title="Limits")


# --- PDF ---------------------------------------------------------------------------------------
def write_report_pdf(path: Path) -> Path:
    """Two pages with a running header and a page-number footer, lines set one by one (as a
    typesetter breaks them), a hyphenated word, a compound broken at its hyphen, and a
    paragraph running over the page break."""
    from fpdf import FPDF

    class Report(FPDF):
        def header(self):
            self.set_font("Helvetica", size=9)
            self.cell(0, 8, "Zephyr Annual Report 2027", align="C", new_x="LMARGIN", new_y="NEXT")
            self.ln(6)

        def footer(self):
            self.set_y(-15)
            self.set_font("Helvetica", size=9)
            self.cell(0, 10, f"Page {self.page_no()}", align="C")

    pdf = Report()
    pdf.set_auto_page_break(False)

    def lines(*rows: str) -> None:
        for row in rows:
            pdf.cell(0, 5, row, new_x="LMARGIN", new_y="NEXT")

    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=18)
    pdf.cell(0, 12, "Site survey", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    lines(
        "The survey team collects informa-",
        "tion about every site, and the well-",
        "known results are published each year.",
    )
    pdf.ln(8)
    lines("Sites are well-known to the team.")
    pdf.set_y(250)
    lines("The committee will meet again")
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    lines("in the spring of 2027 to decide on the", "budget of the next survey.")
    pdf.ln(8)
    lines("A COVID-", "19 rule applies to all site visits.")
    pdf.output(str(path))
    return path


def test_pdf_text_is_reflowed_without_running_headers_footers_or_page_numbers(tmp_path):
    parsed = parse(write_report_pdf(tmp_path / "report.pdf"), PDF)

    assert [(b.kind, b.text, b.page, b.page_end) for b in parsed.blocks] == [
        ("heading", "Site survey", 1, None),
        (
            "text",
            "The survey team collects information about every site, and the well-known results "
            "are published each year.",
            1,
            None,
        ),
        ("text", "Sites are well-known to the team.", 1, None),
        (
            "text",
            "The committee will meet again in the spring of 2027 to decide on the budget of the "
            "next survey.",
            1,
            2,
        ),
        ("text", "A COVID-19 rule applies to all site visits.", 2, None),
    ]
    assert parsed.page_count == 2


def test_a_paragraph_over_a_page_break_is_one_passage_spanning_both_pages(tmp_path):
    parsed = parse(write_report_pdf(tmp_path / "report.pdf"), PDF)

    def words(text: str) -> int:
        return len(text.split())

    chunks = chunk_document(parsed, words, max_tokens=200, overlap_tokens=0, model_max_tokens=256)

    spanning = [c for c in chunks if "committee will meet again in the spring" in c.text]
    assert [(c.page_start, c.page_end) for c in spanning] == [(1, 2)]


def test_numbered_headings_atop_pages_are_not_taken_for_running_headers(tmp_path):
    from fpdf import FPDF

    class Handbook(FPDF):
        def header(self):
            self.set_font("Helvetica", size=8)
            self.cell(0, 6, "ACME Handbook - Internal", align="R", new_x="LMARGIN", new_y="NEXT")

        def footer(self):
            self.set_y(-12)
            self.set_font("Helvetica", size=8)
            self.cell(0, 6, f"{self.page_no()} / {{nb}}", align="C")

    pdf = Handbook()
    pdf.alias_nb_pages()
    for number in (1, 4, 7):  # "Section 4" atop page 2: its number is not the page's
        pdf.add_page()
        pdf.set_font("Helvetica", style="B", size=14)
        pdf.cell(0, 10, f"Section {number}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 5, f"Rule {number} applies to every employee.")
    path = tmp_path / "handbook.pdf"
    pdf.output(str(path))

    assert [(b.kind, b.text, b.page) for b in parse(path, PDF).blocks] == [
        ("heading", "Section 1", 1),
        ("text", "Rule 1 applies to every employee.", 1),
        ("heading", "Section 4", 2),
        ("text", "Rule 4 applies to every employee.", 2),
        ("heading", "Section 7", 3),
        ("text", "Rule 7 applies to every employee.", 3),
    ]


# --- other formats -------------------------------------------------------------------------------
def test_slides_give_titles_as_headings_text_and_tables_with_their_page(tmp_path):
    from pptx import Presentation
    from pptx.util import Inches

    presentation = Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])
    slide.shapes.title.text = "Roadmap"
    slide.placeholders[1].text = "Ship the survey tool in March."
    table = slide.shapes.add_table(2, 2, Inches(1), Inches(6), Inches(6), Inches(1)).table
    for (r, c), value in zip(
        [(0, 0), (0, 1), (1, 0), (1, 1)], ["Quarter", "Goal", "Q1", "Pilot"], strict=True
    ):
        table.cell(r, c).text = value
    path = tmp_path / "deck.pptx"
    presentation.save(str(path))

    parsed = parse(path, PPTX)

    assert [(b.kind, b.text, b.page, b.header) for b in parsed.blocks] == [
        ("heading", "Roadmap", 1, ""),
        ("text", "Ship the survey tool in March.", 1, ""),
        ("table", "Quarter | Goal\nQ1 | Pilot", 1, "Quarter | Goal"),
    ]


def test_markdown_keeps_headings_lists_and_tables(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text(
        "# Limits\n\nThe defaults:\n\n- uploads: 100 MB\n- files: 500\n\n"
        "| Name | Value |\n|------|-------|\n| timeout | 300 s |\n",
        encoding="utf-8",
    )

    assert [(b.kind, b.text) for b in parse(path, MARKDOWN).blocks] == [
        ("heading", "Limits"),
        ("text", "The defaults:"),
        ("list", "uploads: 100 MB"),
        ("list", "files: 500"),
        ("table", "Name | Value\ntimeout | 300 s"),
    ]


def test_plain_text_paragraphs_come_out_as_written(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("Zephyr notes\n\nThe budget\tis   fixed.\n\nAlice\n", encoding="utf-8")

    assert [b.text for b in parse(path, TEXT).blocks] == [
        "Zephyr notes",
        "The budget is fixed.",
        "Alice",
    ]


def test_an_email_gives_its_body(tmp_path):
    message = EmailMessage()
    message["From"] = "alice@example.org"
    message["To"] = "team@example.org"
    message["Subject"] = "Budget"
    message.set_content("Hello team,\n\nThe budget is 4.2 million euros.\n\nAlice")
    path = tmp_path / "mail.eml"
    path.write_bytes(bytes(message))

    parsed = parse(path, EMAIL)

    assert parsed.title == "Budget"
    assert [b.text for b in parsed.blocks] == [
        "Hello team,",
        "The budget is 4.2 million euros.",
        "Alice",
    ]
