"""Real documents of every supported format, written by the real libraries, for the tests.

Each writer puts the same kind of content in: a title, a section heading, and a sentence with a
distinctive fact, so tests can check text, headings and pages came through.
"""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path


def write_pdf(path: Path, pages: list[tuple[str, str]], title: str = "") -> Path:
    """One page per (heading, body) pair; the heading set in a larger font."""
    from fpdf import FPDF

    pdf = FPDF()
    if title:
        pdf.set_title(title)
    for heading, body in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", style="B", size=18)
        pdf.cell(0, 12, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, body)
    pdf.output(str(path))
    return path


def write_docx(path: Path, title: str, sections: list[tuple[str, str]]) -> Path:
    import docx

    document = docx.Document()
    document.core_properties.title = title
    document.add_heading(title, level=0)
    for heading, body in sections:
        document.add_heading(heading, level=1)
        document.add_paragraph(body)
    document.save(str(path))
    return path


def write_pptx(path: Path, slides: list[tuple[str, str]]) -> Path:
    from pptx import Presentation

    presentation = Presentation()
    layout = presentation.slide_layouts[1]  # title and content
    for heading, body in slides:
        slide = presentation.slides.add_slide(layout)
        slide.shapes.title.text = heading
        slide.placeholders[1].text = body
    presentation.save(str(path))
    return path


def write_xlsx(path: Path, sheet: str, rows: list[list[str]]) -> Path:
    from openpyxl import Workbook

    workbook = Workbook()
    worksheet = workbook.active
    worksheet.title = sheet
    for row in rows:
        worksheet.append(row)
    workbook.save(str(path))
    return path


def write_html(path: Path, title: str, sections: list[tuple[str, str]], nav: bool = True) -> Path:
    body = "".join(f"<h2>{h}</h2><p>{b}</p>" for h, b in sections)
    navigation = '<nav><a href="/">Home</a> | <a href="/next">Next page</a></nav>' if nav else ""
    path.write_text(
        f"<!doctype html><html><head><title>{title}</title></head><body>{navigation}"
        f"<main><h1>{title}</h1>{body}</main><footer>Copyright footer text</footer></body></html>",
        encoding="utf-8",
    )
    return path


def write_markdown(path: Path, title: str, sections: list[tuple[str, str]]) -> Path:
    text = f"# {title}\n\n" + "".join(f"## {h}\n\n{b}\n\n" for h, b in sections)
    path.write_text(text, encoding="utf-8")
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_eml(path: Path, subject: str, body: str) -> Path:
    message = EmailMessage()
    message["From"] = "Alice <alice@example.org>"
    message["To"] = "Team <team@example.org>"
    message["Subject"] = subject
    message["Date"] = "Mon, 02 Nov 2026 09:00:00 +0000"
    message.set_content(body)
    path.write_bytes(bytes(message))
    return path


FACT = "The Zephyr project budget for 2027 is 4.2 million euros."


def write_all_formats(folder: Path) -> dict[str, Path]:
    """One document of each supported format, each stating FACT under a 'Budget' heading."""
    folder.mkdir(parents=True, exist_ok=True)
    intro = "This document describes the Zephyr project and its plans in some detail."
    return {
        "pdf": write_pdf(
            folder / "report.pdf",
            [("Introduction", intro), ("Budget", FACT)],
            title="Zephyr report",
        ),
        "docx": write_docx(
            folder / "report.docx", "Zephyr report", [("Introduction", intro), ("Budget", FACT)]
        ),
        "pptx": write_pptx(folder / "slides.pptx", [("Introduction", intro), ("Budget", FACT)]),
        "xlsx": write_xlsx(folder / "budget.xlsx", "Budget", [["Item", "Value"], ["Budget", FACT]]),
        "html": write_html(
            folder / "page.html", "Zephyr report", [("Introduction", intro), ("Budget", FACT)]
        ),
        "md": write_markdown(
            folder / "notes.md", "Zephyr report", [("Introduction", intro), ("Budget", FACT)]
        ),
        "txt": write_text(folder / "notes.txt", f"Zephyr notes\n\n{intro}\n\n{FACT}\n"),
        "eml": write_eml(
            folder / "mail.eml", "Zephyr budget", f"Hello team,\n\n{intro}\n\n{FACT}\n\nAlice"
        ),
    }
