"""Parse step: a stored file becomes a list of Blocks (text, kind, page, heading level).

Parsers are chosen by content type, sniffed from the bytes with libmagic. Office formats, HTML,
Markdown, text and e-mail go through unstructured; PDFs are read from their text layer with
pdfminer.six (unstructured's PDF path imports layout-model packages we do not install).
"""

from __future__ import annotations

import contextlib
import re
import statistics
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import magic

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HTML = "text/html"
MARKDOWN = "text/markdown"
TEXT = "text/plain"
EMAIL = "message/rfc822"

SUPPORTED_TYPES = {
    PDF: "PDF",
    DOCX: "Word document",
    PPTX: "PowerPoint presentation",
    XLSX: "Excel workbook",
    HTML: "HTML page",
    MARKDOWN: "Markdown",
    TEXT: "plain text",
    EMAIL: "e-mail",
}

_OOXML_BY_PART = {"word/": DOCX, "ppt/": PPTX, "xl/": XLSX}
_MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdown"}
# Uncompressed size limit for Office files (zip containers): a zip bomb fails here, cheaply.
# 256 MB is 2.5 times the upload limit: an image-heavy file (images barely compress) stays under
# it, while text XML beyond it could not be parsed within the default 2 GB memory limit anyway
# (python-docx holds every part in memory, and the XML tree takes several times the text).
MAX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024
MAX_ZIP_MEMBERS = 10_000
# Real Office files compress text about 5-20 fold; past 100 MB, a ratio over 100 is a bomb.
MAX_PLAIN_EXPANSION = 100 * 1024 * 1024
MAX_COMPRESSION_RATIO = 100


class ParseError(Exception):
    """A file that cannot be turned into text; the message is shown to people as the reason."""


# (offset of the line's first character in the block's text, page, left, top, right, bottom):
# the edges as shares (0..1) of the page's width and height, measured from its top left corner.
LineBox = tuple[int, int, float, float, float, float]


@dataclass(frozen=True)
class Block:
    text: str
    kind: str = "text"  # heading | text | list | table
    page: int | None = None
    level: int = 0  # heading depth, 0 = top
    # A paragraph that runs over a page break keeps both pages: `page` to `page_end`.
    page_end: int | None = None
    # A table's header row ("Name | Value"), repeated at the top of every chunk of that table.
    header: str = ""
    # Where each line of `text` is on its page (PDFs only), in reading order: LineBox tuples.
    line_boxes: tuple[LineBox, ...] = ()


@dataclass
class ParsedDocument:
    blocks: list[Block]
    title: str = ""
    page_count: int | None = None
    metadata: dict = field(default_factory=dict)


def detect_content_type(path: Path, filename: str) -> str:
    """The file's type judged by its bytes; the name only tells Markdown from plain text."""
    sniffed = magic.from_file(str(path), mime=True)
    suffix = Path(filename).suffix.lower()
    if sniffed in {"application/zip", "application/octet-stream"} or sniffed.startswith(
        "application/vnd.openxmlformats"
    ):
        return _ooxml_type(path) or sniffed
    if sniffed == "text/xml" and suffix in {".html", ".htm", ".xhtml"}:
        return HTML
    if (
        sniffed == HTML
        and suffix in {".txt", ".text", *_MARKDOWN_SUFFIXES}
        and not _starts_like_html(path)
    ):
        # A note or Markdown file that merely contains tags (`<script>` in a security memo) is
        # text: parsing it as HTML would silently drop what the tags enclose.
        return MARKDOWN if suffix in _MARKDOWN_SUFFIXES else TEXT
    if sniffed.startswith("text/") and sniffed != HTML:
        if suffix in _MARKDOWN_SUFFIXES:
            return MARKDOWN
        if suffix == ".eml" and sniffed in {TEXT, EMAIL}:
            return EMAIL
        if sniffed in {"text/x-c", "text/x-c++", "text/x-script.python", "text/csv"}:
            return TEXT
    return sniffed


def _starts_like_html(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(1024).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _ooxml_type(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    for prefix, content_type in _OOXML_BY_PART.items():
        if any(name.startswith(prefix) for name in names):
            return content_type
    return None


def parse(path: Path, content_type: str) -> ParsedDocument:
    """Parse `path` as `content_type` in a child process with memory and time limits (settings
    RAG_PARSE_MEMORY_MB, RAG_PARSE_TIMEOUT); raise ParseError with a human-readable reason."""
    if content_type not in _PARSERS:
        raise ParseError(f"Unsupported file type: {content_type}.")
    if path.stat().st_size == 0:
        raise ParseError("The file is empty.")
    from ingestion import sandbox

    memory_mb, timeout_s = _limits()
    return sandbox.parse_isolated(path, content_type, memory_mb, timeout_s)


def _limits() -> tuple[int, int]:
    try:
        from django.conf import settings

        return settings.RAG_PARSE_MEMORY_MB, settings.RAG_PARSE_TIMEOUT
    except Exception:  # settings not configured (a script): the documented defaults
        return 2048, 300


def parse_here(path: Path, content_type: str) -> ParsedDocument:
    """Parse in this process, without limits: what the child process of `parse` runs."""
    parser = _PARSERS.get(content_type)
    if parser is None:
        raise ParseError(f"Unsupported file type: {content_type}.")
    if path.stat().st_size == 0:
        raise ParseError("The file is empty.")
    try:
        parsed = parser(path)
    except (ParseError, MemoryError):
        raise
    except Exception as exc:  # a parser library's own error: report it as the file's fault
        if isinstance(exc.__cause__ or exc.__context__, MemoryError):
            raise MemoryError from exc
        raise ParseError(
            f"Could not read this {SUPPORTED_TYPES[content_type]}: {_reason(exc)}"
        ) from exc
    parsed.title = _clean(parsed.title)
    parsed.blocks = [b for b in parsed.blocks if b.text.strip()]
    if not parsed.blocks:
        raise ParseError(
            "No extractable text (a scanned document needs OCR, which is not enabled)."
        )
    return parsed


def parsed_to_dict(parsed: ParsedDocument) -> dict:
    """A ParsedDocument as plain JSON data (the child process sends it this way, not pickled:
    the child reads untrusted files, so the parent trusts nothing it sends beyond data)."""
    return {
        "title": parsed.title,
        "page_count": parsed.page_count,
        "metadata": parsed.metadata,
        "blocks": [
            [b.text, b.kind, b.page, b.level, b.page_end, b.header, [list(x) for x in b.line_boxes]]
            for b in parsed.blocks
        ],
    }


def parsed_from_dict(data: dict) -> ParsedDocument:
    blocks = []
    for text, kind, page, level, page_end, header, line_boxes in data["blocks"]:
        blocks.append(
            Block(
                str(text),
                kind if kind in {"heading", "text", "list", "table"} else "text",
                int(page) if page is not None else None,
                int(level),
                int(page_end) if page_end is not None else None,
                str(header),
                tuple(_line_box(*box) for box in line_boxes),
            )
        )
    page_count = data.get("page_count")
    return ParsedDocument(
        blocks=blocks,
        title=str(data.get("title") or ""),
        page_count=int(page_count) if page_count is not None else None,
        metadata=dict(data.get("metadata") or {}),
    )


def _line_box(
    offset: int, page: int, left: float, top: float, right: float, bottom: float
) -> LineBox:
    def share(value: float) -> float:
        return min(max(float(value), 0.0), 1.0)

    return (int(offset), int(page), share(left), share(top), share(right), share(bottom))


def preload() -> None:
    """Import every parser library now (the child-process helper does, once, before forking)."""
    import docx  # noqa: F401
    import lxml.html  # noqa: F401
    import pdfminer.high_level  # noqa: F401
    import pypdf  # noqa: F401
    import unstructured.partition.docx
    import unstructured.partition.email
    import unstructured.partition.html
    import unstructured.partition.md
    import unstructured.partition.pptx
    import unstructured.partition.text
    import unstructured.partition.xlsx

    # What unstructured loads on first use, loaded here once: its spaCy sentence splitter (which
    # sorts text into narrative and titles) and langdetect's language profiles. Each forked child
    # would otherwise load them again for every document: about two thirds of a page's parse.
    # A warm-up that fails costs only speed: the documents that need them report the error.
    with contextlib.suppress(Exception):
        unstructured.partition.html.partition_html(
            text="<html><body><h1>Warm-up</h1><p>Loaded once. Then every child has it.</p>"
            "<p>Kept in the helper process's memory.</p></body></html>"
        )


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


# --- PDF: pdfminer's text layer; headings guessed from font size ---------------------------------
# A PDF has no paragraphs, only positioned lines. What is done to get text a reader would write:
# - page furniture goes: a line in the top or bottom tenth of the page that recurs there on at
#   least 40 % of the pages (and on two or more), identical or differing only by the page number
#   ("Page 3 of 9", "Page 4 of 9"; not "Section 1", "Section 5"), and bare page numbers ("7",
#   "- 7 -", "Page 7", "vii") in those bands;
# - the lines of a text box are joined into one paragraph; a line starting with a list marker
#   keeps its own line;
# - a line ending in a hyphen is joined to the next without it ("informa-" + "tion"), unless the
#   next part starts with a capital or digit ("COVID-" + "19"), or the document itself writes
#   the hyphenated form ("well-known") and never the joined one;
# - a paragraph that does not end a sentence continues into the next box when that one starts
#   in lower case (or the first ends with a comma or hyphen), across a page break too; the block
#   then spans both pages.
_FURNITURE_BAND = 0.1
_FURNITURE_SHARE = 0.4
_PAGE_NUMBER = re.compile(
    # No two `\s*` side by side (quadratic on a long run of blanks): each follows a token.
    r"(?:page)?\s*(?:[-\u2013\u2014(\[]\s*)?\d{1,4}\s*(?:[-\u2013\u2014)\]]\s*)?"
    r"(?:(?:of|/)\s*\d{1,4})?|[ivxlcdm]{1,7}",
    re.IGNORECASE,
)
_LIST_MARKER = re.compile(
    r"(?:[\u2022\u2023\u25e6\u2043\u2219*\u2013\u2014-]|\d{1,3}[.)]|[a-z][.)])\s"
)
_TERMINAL = (".", "!", "?", ":", ";", '"', "\u201d", "'")
_COMPOUND = re.compile(r"\w+(?:-\w+)*")
_DIGITS = re.compile(r"\d+")


@dataclass
class _PdfBox:
    page: int
    lines: list[str]
    size: float
    top: float  # distance of the box's top from the page top, as a share of the page height
    bottom: float  # distance of the box's bottom from the page top, as a share
    # Each line's (left, top, right, bottom), shares of the page from its top left corner.
    rects: list[tuple[float, float, float, float]] = field(default_factory=list)


def _parse_pdf(path: Path) -> ParsedDocument:
    from pdfminer.layout import LTChar, LTTextBox, LTTextLine
    from pdfminer.pdfdocument import PDFPasswordIncorrect
    from pdfminer.pdfparser import PDFSyntaxError

    boxes: list[_PdfBox] = []
    page_count = 0
    try:
        for page_number, (page, shown) in enumerate(_pdf_pages(path), start=1):
            page_count = page_number
            height = max(page.height, 1.0)
            left, bottom, right, top = shown
            shown_width, shown_height = max(right - left, 1.0), max(top - bottom, 1.0)
            for element in page:
                if not isinstance(element, LTTextBox):
                    continue
                # The box's text line by line, each with its place on the page (what a viewer
                # highlights a cited passage by); element.get_text() is these lines' text joined.
                lines: list[str] = []
                rects: list[tuple[float, float, float, float]] = []
                for line in element:
                    if not isinstance(line, LTTextLine):
                        continue
                    rect = (
                        _share(line.x0 - left, shown_width),
                        _share(top - line.y1, shown_height),
                        _share(line.x1 - left, shown_width),
                        _share(top - line.y0, shown_height),
                    )
                    for text in normalize_text(line.get_text()).split("\n"):
                        if text:
                            lines.append(text)
                            rects.append(rect)
                if not lines:
                    continue
                sizes = [
                    char.size
                    for line in element
                    if isinstance(line, LTTextLine)
                    for char in line
                    if isinstance(char, LTChar)
                ]
                boxes.append(
                    _PdfBox(
                        page_number,
                        lines,
                        statistics.median(sizes) if sizes else 0.0,
                        top=(page.y1 - element.y1) / height,
                        bottom=(page.y1 - element.y0) / height,
                        rects=rects,
                    )
                )
    except PDFPasswordIncorrect as exc:
        raise ParseError("The PDF is encrypted with a password.") from exc
    except PDFSyntaxError as exc:
        raise ParseError(f"The PDF is damaged or not a PDF: {exc}") from exc
    if page_count == 0:
        raise ParseError("The PDF is damaged or has no pages.")
    boxes = _without_furniture(boxes, page_count)
    if not boxes:
        raise ParseError("No extractable text (a scanned PDF needs OCR, which is not enabled).")

    vocabulary = {
        word.casefold() for box in boxes for line in box.lines for word in _COMPOUND.findall(line)
    }
    # The body text's size is the one most of the characters are set in.
    characters: dict[float, int] = {}
    for box in boxes:
        characters[round(box.size, 1)] = characters.get(round(box.size, 1), 0) + sum(
            map(len, box.lines)
        )
    body_size = max(characters, key=lambda size: characters[size])
    heading_sizes = sorted(
        {
            round(box.size, 1)
            for box in boxes
            if box.size >= body_size * 1.15 and sum(map(len, box.lines)) < 200
        },
        reverse=True,
    )
    blocks: list[Block] = []
    for box in boxes:
        rounded = round(box.size, 1)
        if rounded in heading_sizes and len(box.lines) == 1:
            level = min(heading_sizes.index(rounded), 5)
            line_box = ((0, box.page, *box.rects[0]),)
            blocks.append(Block(box.lines[0], "heading", box.page, level, line_boxes=line_box))
            continue
        text, starts = _reflow(box.lines, vocabulary)
        previous = blocks[-1] if blocks else None
        if previous is not None and previous.kind == "text" and _continues(previous.text, text):
            joined = _join_lines(previous.text, text, vocabulary)
            shift = len(joined) - len(text)  # the box's text ends the joined text unchanged
            blocks[-1] = Block(
                joined,
                "text",
                previous.page,
                page_end=box.page if box.page != previous.page else previous.page_end,
                line_boxes=previous.line_boxes + _line_boxes(box, starts, shift),
            )
        else:
            blocks.append(Block(text, "text", box.page, line_boxes=_line_boxes(box, starts)))
    title = _pdf_title(path) or next((b.text for b in blocks if b.kind == "heading"), "")
    return ParsedDocument(blocks=blocks, title=title, page_count=page_count)


def _pdf_pages(path: Path) -> Iterator[tuple[Any, tuple[float, float, float, float]]]:
    """pdfminer's layout of each page (what extract_pages yields), with the part of the page a
    viewer shows: its crop box, in the layout's coordinates (left, bottom, right, top). Print
    files often crop their media box (bleed, crop marks); pdf.js shows the crop box, so line
    boxes are measured from it."""
    from pdfminer.converter import PDFPageAggregator
    from pdfminer.layout import LAParams
    from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager
    from pdfminer.pdfpage import PDFPage
    from pdfminer.utils import apply_matrix_pt

    with path.open("rb") as handle:
        manager = PDFResourceManager()
        device = PDFPageAggregator(manager, laparams=LAParams())
        interpreter = PDFPageInterpreter(manager, device)
        for page in PDFPage.get_pages(handle):
            interpreter.process_page(page)
            layout = device.get_result()
            # The matrix process_page put the page under (its rotation, its media box's origin).
            x0, y0, x1, y1 = page.mediabox
            ctm = {
                90: (0, -1, 1, 0, -y0, x1),
                180: (-1, 0, 0, -1, x1, y1),
                270: (0, 1, -1, 0, y1, -x0),
            }.get(page.rotate, (1, 0, 0, 1, -x0, -y0))
            cx0, cy0, cx1, cy1 = page.cropbox
            corners = [apply_matrix_pt(ctm, (cx0, cy0)), apply_matrix_pt(ctm, (cx1, cy1))]
            xs, ys = [x for x, _ in corners], [y for _, y in corners]
            # pdf.js shows the crop box within the media box.
            shown = (
                max(min(xs), layout.x0),
                max(min(ys), layout.y0),
                min(max(xs), layout.x1),
                min(max(ys), layout.y1),
            )
            if shown[2] <= shown[0] or shown[3] <= shown[1]:
                shown = (layout.x0, layout.y0, layout.x1, layout.y1)
            yield layout, shown


def _share(length: float, whole: float) -> float:
    return round(min(max(length / whole, 0.0), 1.0), 4)


def _in_band(box: _PdfBox) -> bool:
    return box.bottom <= _FURNITURE_BAND or box.top >= 1 - _FURNITURE_BAND


def _without_furniture(boxes: list[_PdfBox], page_count: int) -> list[_PdfBox]:
    """The boxes less running headers, footers and page numbers."""
    occurrences: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for box in boxes:
        if _in_band(box):
            text = " ".join(box.lines)
            band = "top" if box.bottom <= _FURNITURE_BAND else "bottom"
            occurrences.setdefault((band, _DIGITS.sub("#", text.casefold())), []).append(
                (box.page, text)
            )
    needed = max(2, int(page_count * _FURNITURE_SHARE + 0.999))
    furniture = {key for key, seen in occurrences.items() if _recurs(seen, needed)}
    kept = []
    for box in boxes:
        if _in_band(box):
            text = " ".join(box.lines)
            band = "top" if box.bottom <= _FURNITURE_BAND else "bottom"
            if (band, _DIGITS.sub("#", text.casefold())) in furniture:
                continue
            if _PAGE_NUMBER.fullmatch(text):
                continue
        kept.append(box)
    return kept


def _recurs(seen: list[tuple[int, str]], needed: int) -> bool:
    """Whether a line is running furniture: the same text on enough pages, or text whose
    numbers differ only by the page number ("Page 3 of 9", "Page 4 of 9"), not by anything else
    ("Section 1" atop page 1 and "Section 5" atop page 2 are headings)."""
    if len({page for page, _ in seen}) < needed:
        return False
    if len({text for _, text in seen}) == 1:
        return True
    numbers = [(page, [int(n) for n in _DIGITS.findall(text)]) for page, text in seen]
    width = len(numbers[0][1])
    for position in range(width):
        offsets = {found[position] - page for page, found in numbers}
        others = {tuple(found[:position] + found[position + 1 :]) for _, found in numbers}
        if len(offsets) == 1 and len(others) == 1:
            return True
    return False


def _reflow(lines: list[str], vocabulary: set[str]) -> tuple[str, list[int]]:
    """The lines as one paragraph, and where each line starts in it. Joining may drop the hyphen
    ending a line but never changes the line appended, so each line is the end of the text made
    so far."""
    text = lines[0]
    starts = [0]
    for line in lines[1:]:
        if _LIST_MARKER.match(line):
            text += "\n" + line
        else:
            text = _join_lines(text, line, vocabulary)
        starts.append(len(text) - len(line))
    return text, starts


def _line_boxes(box: _PdfBox, starts: list[int], shift: int = 0) -> tuple[LineBox, ...]:
    return tuple(
        (start + shift, box.page, *rect) for start, rect in zip(starts, box.rects, strict=True)
    )


def _join_lines(first: str, second: str, vocabulary: set[str]) -> str:
    """Join two pieces of one paragraph, undoing a line-end hyphenation (see the rules above)."""
    if len(first) >= 2 and first.endswith("-") and first[-2].isalpha() and second[:1].isalnum():
        head = _COMPOUND.findall(first[:-1])
        tail = _COMPOUND.findall(second)
        left = head[-1] if head else ""
        right = tail[0] if tail else ""
        if not right[:1].islower():
            return first + second  # "COVID-" + "19", "Jean-" + "Pierre"
        joined, hyphenated = (left + right).casefold(), f"{left}-{right}".casefold()
        if hyphenated in vocabulary and joined not in vocabulary:
            return first + second  # "well-" + "known" where the text writes "well-known"
        return first[:-1] + second
    return f"{first} {second}"


def _continues(previous: str, following: str) -> bool:
    """Whether `following` carries on the paragraph `previous` left unfinished."""
    if not previous or not following or previous.endswith(_TERMINAL):
        return False
    if _LIST_MARKER.match(following):
        return False
    return following[0].islower() or previous.endswith((",", "-"))


def _pdf_title(path: Path) -> str:
    try:
        from pypdf import PdfReader

        info = PdfReader(str(path)).metadata
        return _clean(str(info.title)) if info and info.title else ""
    except Exception:  # metadata is a nicety; a damaged info dict must not fail the document
        return ""


# --- everything else: unstructured ----------------------------------------------------------------
_UNSTRUCTURED_KINDS = {"Title": "heading", "ListItem": "list", "Table": "table"}


def _from_elements(elements: list, first_row_is_header: bool = False) -> list[Block]:
    """unstructured's elements as Blocks; a table becomes one row a line, cells separated by
    " | ", with its header row kept apart for the chunker."""
    blocks = []
    for element in elements:
        category = type(element).__name__
        if category in {"Image", "PageBreak", "Header", "Footer", "PageNumber"}:
            continue
        if category == "Table" and element.metadata.text_as_html:
            table = _table_block(
                element.metadata.text_as_html, element.metadata.page_number, first_row_is_header
            )
            if table is not None:
                blocks.append(table)
                continue
        text = _clean(element.text)
        if not text:
            continue
        kind = _UNSTRUCTURED_KINDS.get(category, "text")
        depth = element.metadata.category_depth or 0
        blocks.append(
            Block(text, kind, element.metadata.page_number, depth if kind == "heading" else 0)
        )
    return blocks


CELL_SEPARATOR = " | "


def _table_block(table_html: str, page: int | None, first_row_is_header: bool) -> Block | None:
    """A table's rows as lines of cells. The header is the table's <thead> or leading row of <th>
    cells; in Office files, which do not mark one, the first row."""
    import lxml.html

    try:
        table = lxml.html.fromstring(table_html)
    except (lxml.etree.ParserError, ValueError):
        return None
    rows: list[str] = []
    header = ""
    for number, row in enumerate(table.iter("tr")):
        cells = [_clean(cell.text_content()).replace("\n", " ") for cell in row]
        if not any(cells):
            continue
        line = _SPACE_RUN.sub(" ", CELL_SEPARATOR.join(cells)).rstrip()
        marked = row.getparent() is not None and row.getparent().tag == "thead"
        all_th = all(cell.tag == "th" for cell in row)
        if not rows and (marked or all_th or (first_row_is_header and number == 0)):
            header = line
        rows.append(line)
    if not rows:
        return None
    return Block("\n".join(rows), "table", page, header=header if len(rows) > 1 else "")


def _parse_with(
    partitioner: Callable, first_row_is_header: bool = False, **kwargs
) -> Callable[[Path], ParsedDocument]:
    def parse_file(path: Path) -> ParsedDocument:
        elements = partitioner()(filename=str(path), **kwargs)
        blocks = _from_elements(elements, first_row_is_header)
        pages = [b.page for b in blocks if b.page]
        return ParsedDocument(
            blocks=blocks,
            title=next((b.text for b in blocks if b.kind == "heading"), ""),
            page_count=max(pages) if pages else None,
        )

    return parse_file


def _parse_docx(path: Path) -> ParsedDocument:
    _check_zip(path)
    from unstructured.partition.docx import partition_docx

    parsed = _parse_with(lambda: partition_docx, first_row_is_header=True)(path)
    try:
        import docx

        core_title = docx.Document(str(path)).core_properties.title
    except Exception:  # a missing core-properties part is common and harmless
        core_title = ""
    parsed.title = _clean(core_title or "") or parsed.title
    return parsed


def _parse_pptx(path: Path) -> ParsedDocument:
    _check_zip(path)
    from unstructured.partition.pptx import partition_pptx

    return _parse_with(lambda: partition_pptx, first_row_is_header=True)(path)


def _parse_xlsx(path: Path) -> ParsedDocument:
    _check_zip(path)
    from unstructured.partition.xlsx import partition_xlsx

    elements = partition_xlsx(filename=str(path), find_subtable=False)
    blocks: list[Block] = []
    for element in elements:
        # Each sheet is a section under its name; its first row is taken as the header.
        sheet = _clean(element.metadata.page_name or "")
        if sheet and (not blocks or blocks[-1].page != element.metadata.page_number):
            blocks.append(Block(sheet, "heading", element.metadata.page_number, 0))
        blocks.extend(_from_elements([element], first_row_is_header=True))
    pages = [b.page for b in blocks if b.page]
    return ParsedDocument(blocks=blocks, title="", page_count=max(pages) if pages else None)


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise ParseError("The Office file is damaged (not a valid zip container).") from exc
    if len(members) > MAX_ZIP_MEMBERS:
        raise ParseError("The Office file has too many parts to be a real document.")
    expanded = sum(m.file_size for m in members)
    if expanded > MAX_UNCOMPRESSED_BYTES:
        raise ParseError(
            f"The Office file expands to more than {MAX_UNCOMPRESSED_BYTES // 2**20} MB: "
            "refused as a likely zip bomb."
        )
    packed = max(sum(m.compress_size for m in members), 1)
    if expanded > MAX_PLAIN_EXPANSION and expanded / packed > MAX_COMPRESSION_RATIO:
        raise ParseError(
            f"The Office file expands {expanded // packed}-fold to {expanded // 2**20} MB: "
            "refused as a likely zip bomb."
        )


# --- HTML: the page's content, without its furniture ------------------------------------------
# Boilerplate is judged from the page's structure, never from its words (docs/README "How
# documents are parsed"):
# 1. elements that are never content (scripts, forms, hidden elements) and landmarks that say
#    they are not (nav, role=navigation/banner/contentinfo/search/complementary);
# 2. the content root: <main> or role=main, else a single <article>, else <body>; outside a
#    declared root, <header>, <footer> and <aside> are page furniture too;
# 3. navigation links say so themselves: rel=prev/next/up/home... or an accesskey. The bar that
#    holds them (the largest block around them with little other text) goes;
# 4. link-dense blocks: a block whose text is mostly link text with hardly any other words is a
#    menu, breadcrumb trail or table of contents. Inside a declared content root only short
#    links count (a list of descriptive links there is content); a sentence is never dropped.
_NEVER_CONTENT_XPATH = (
    "//script | //style | //noscript | //template | //svg | //canvas | //iframe | //object"
    " | //form | //button | //select | //textarea | //input | //nav | //dialog"
    " | //*[@hidden] | //*[@aria-hidden='true']"
    " | //*[@role='navigation' or @role='banner' or @role='contentinfo' or @role='search'"
    " or @role='complementary' or @role='menu' or @role='menubar' or @role='toolbar'"
    " or @role='tablist']"
)
_NAVIGATION_RELS = {
    "prev",
    "previous",
    "next",
    "up",
    "home",
    "start",
    "first",
    "last",
    "contents",
    "index",
    "top",
}
_BLOCK_TAGS = {
    "div",
    "p",
    "ul",
    "ol",
    "dl",
    "li",
    "dt",
    "dd",
    "table",
    "thead",
    "tbody",
    "tfoot",
    "tr",
    "td",
    "th",
    "section",
    "header",
    "footer",
    "aside",
    "menu",
    "center",
    "blockquote",
    "figure",
    "details",
    "address",
}
_HEADING_TAGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
# A navigation bar holds little besides its links: the titles of the pages it points to.
_NAV_BAR_OTHER_CHARS = 120
# Counted per blank-separated token: `\S*\w\S*` over text is quadratic on a long run of
# non-word marks (dots, dashes, zero-width spaces), retried from each of them.
_WORD_CHAR = re.compile(r"\w")
_SENTENCE_END_CHARS = (".", "!", "?", ":", ";")


@dataclass
class _Links:
    """How much of an element's text is link text, and where the element sits in the text."""

    chars: int = 0
    link_chars: int = 0
    links: int = 0
    link_words: int = 0
    other_words: int = 0
    start: int = 0  # characters of text before the element
    end: int = 0  # ... before its end

    def add(self, other: _Links) -> None:
        self.chars += other.chars
        self.link_chars += other.link_chars
        self.links += other.links
        self.link_words += other.link_words
        self.other_words += other.other_words


def _measure_links(node, inside_link: bool, table: dict, position: list[int]) -> _Links:
    is_link = node.tag == "a" and node.get("href") is not None
    linked = inside_link or is_link
    measure = _Links(links=1 if is_link else 0, start=position[0])

    def count(text: str | None) -> None:
        if not text:
            return
        chars = len("".join(text.split()))
        words = sum(1 for token in text.split() if _WORD_CHAR.search(token))
        measure.chars += chars
        position[0] += chars
        if linked:
            measure.link_chars += chars
            measure.link_words += words
        else:
            measure.other_words += words

    count(node.text)
    for child in node:
        if isinstance(child.tag, str):
            measure.add(_measure_links(child, linked, table, position))
        count(child.tail)
    measure.end = position[0]
    table[node] = measure
    return measure


def _measures(root) -> dict:
    table: dict = {}
    _measure_links(root, False, table, [0])
    return table


def _is_link_list(node, measure: _Links, declared_root: _Links | None) -> bool:
    if measure.links < 2 or measure.chars == 0:
        return False
    density = measure.link_chars / measure.chars
    if declared_root is not None:
        # Inside the page's declared content: only a run of short links at its very start or
        # end (breadcrumbs, a pager, a trailing table of contents); descriptive links and link
        # lists between paragraphs are part of what the page says.
        at_edge = measure.start == 0 or measure.end >= declared_root.end
        short_links = measure.link_words / measure.links <= 3
        link_list = measure.links >= 3 and density >= 0.5 and measure.other_words <= 2
        if not (at_edge and short_links and link_list):
            return False
    elif density < 0.5 or measure.other_words > 8:
        return False
    if measure.other_words:
        # "See Section 4.2 and Section 4.3." is a sentence that happens to be all links.
        text = " ".join(node.text_content().split())
        if text.endswith(_SENTENCE_END_CHARS):
            return False
    return True


def _is_navigation_link(link) -> bool:
    rels = set((link.get("rel") or "").lower().split())
    return bool(rels & _NAVIGATION_RELS) or link.get("accesskey") is not None


def _navigation_bar(link, root, measures: dict):
    """The largest block around a navigation link that holds little besides navigation links."""
    bar = None
    node = link.getparent()
    while node is not None and node is not root:
        if node.tag in _BLOCK_TAGS:
            if any(child.tag in _HEADING_TAGS for child in node.iter()):
                break
            nav_chars = sum(
                len("".join(a.text_content().split()))
                for a in node.iter("a")
                if _is_navigation_link(a)
            )
            if measures[node].chars - nav_chars > _NAV_BAR_OTHER_CHARS:
                break
            bar = node
        node = node.getparent()
    return bar


def _content_root(tree):
    """The element holding the page's content, and whether the page declared it."""
    declared = tree.xpath("//main | //*[@role='main']")
    if declared:
        return declared[0], True
    articles = tree.xpath("//article")
    if len(articles) == 1:
        return articles[0], True
    body = tree.find(".//body")
    return (body if body is not None else tree), False


def _strip_boilerplate(tree, link_lists: bool = True):
    """The page's content root with its furniture removed (see the rules above)."""
    for node in tree.xpath(_NEVER_CONTENT_XPATH):
        if node.getparent() is not None:
            node.drop_tree()
    # Permalink anchors next to headings ("¶", "#", "§"): a link to this very page.
    for link in tree.xpath("//a[starts-with(@href, '#')]"):
        text = link.text_content().strip()
        if len(text) <= 1 and not text.isalnum() and link.getparent() is not None:
            link.drop_tree()
    root, declared = _content_root(tree)
    if not declared:
        for node in root.xpath(".//header | .//footer | .//aside"):
            if not node.xpath("ancestor::article") and node.getparent() is not None:
                node.drop_tree()
    measures = _measures(root)
    bars = {
        bar
        for link in root.iter("a")
        if _is_navigation_link(link)
        for bar in [_navigation_bar(link, root, measures)]
        if bar is not None
    }
    for bar in bars:
        if bar.getparent() is not None:
            bar.drop_tree()
    if link_lists:
        measures = _measures(root)  # again: the bars are gone
        _drop_link_lists(root, measures[root] if declared else None, measures)
    return root


_TABLE_TAGS = {"table", "thead", "tbody", "tfoot", "tr", "td", "th"}


def _unwrap_source_lines(node, inside_pre: bool = False) -> None:
    """Line breaks in HTML source are spaces, except inside <pre>: said so before unstructured
    reads the page, since its table cells join source lines without one ("MIME\nquoted" would
    become "MIMEquoted")."""
    inside_pre = inside_pre or node.tag in {"pre", "textarea"}
    if not inside_pre and node.text and "\n" in node.text:
        node.text = node.text.replace("\n", " ")
    for child in node:
        if isinstance(child.tag, str):
            _unwrap_source_lines(child, inside_pre)
        if not inside_pre and child.tail and "\n" in child.tail:
            child.tail = child.tail.replace("\n", " ")


def _drop_link_lists(node, declared_root: _Links | None, measures: dict) -> None:
    for child in list(node):
        if not isinstance(child.tag, str):
            continue
        if declared_root is not None and child.tag in _TABLE_TAGS:
            continue  # a table in the content is data, even when its cells are links
        measure = measures.get(child)
        if (
            child.tag in _BLOCK_TAGS
            and measure is not None
            and _is_link_list(child, measure, declared_root)
        ):
            child.drop_tree()
        else:
            _drop_link_lists(child, declared_root, measures)


def _parse_html(path: Path) -> ParsedDocument:
    import lxml.html
    from unstructured.partition.html import partition_html

    raw = path.read_bytes()

    def read_tree():
        parser = lxml.html.HTMLParser()
        try:
            tree = lxml.html.fromstring(raw, parser=parser)
        except (lxml.etree.ParserError, ValueError) as exc:
            raise ParseError("The HTML page has no content.") from exc
        # libxml2 stops descending at 256 levels (and at 10 MB text runs) and silently drops
        # the rest: refuse the page with the reason rather than index part of it.
        limits = [e.message for e in parser.error_log if e.type_name == "ERR_RESOURCE_LIMIT"]
        if limits:
            what = "nested too deeply" if "depth" in limits[0].lower() else "too large in one piece"
            raise ParseError(f"The HTML page is {what} to be read safely ({limits[0].strip()}).")
        return tree

    tree = read_tree()
    page_title = _clean(tree.findtext(".//title") or "")
    root = _strip_boilerplate(tree)
    _unwrap_source_lines(root)
    blocks = _from_elements(partition_html(text=lxml.html.tostring(root, encoding="unicode")))
    if not blocks:
        # A page that is nothing but links (a site map, an index) is still indexed as such.
        root = _strip_boilerplate(read_tree(), link_lists=False)
        _unwrap_source_lines(root)
        blocks = _from_elements(partition_html(text=lxml.html.tostring(root, encoding="unicode")))
    first_heading = next((b.text for b in blocks if b.kind == "heading"), "")
    return ParsedDocument(blocks=blocks, title=first_heading or page_title)


def _parse_markdown(path: Path) -> ParsedDocument:
    from unstructured.partition.md import partition_md

    return _parse_with(lambda: partition_md)(path)


def _parse_text(path: Path) -> ParsedDocument:
    from unstructured.partition.text import partition_text

    return _parse_with(lambda: partition_text)(path)


def _parse_email(path: Path) -> ParsedDocument:
    from email import policy
    from email.parser import BytesParser

    from unstructured.partition.email import partition_email

    with path.open("rb") as handle:
        subject = (
            BytesParser(policy=policy.default).parse(handle, headersonly=True).get("subject", "")
        )
    # Attachments are not parsed: each would bypass the upload checks (type allow-list, zip-bomb
    # check). Their names are listed so a search finds the message; upload them separately.
    parsed = _parse_with(lambda: partition_email, process_attachments=False)(path)
    names = _attachment_names(path)
    if names:
        parsed.blocks.append(
            Block(
                "Attachments (not indexed; upload them as documents of their own): "
                + ", ".join(names)
            )
        )
    parsed.title = _clean(str(subject)) or parsed.title
    return parsed


def _attachment_names(path: Path) -> list[str]:
    from email import policy
    from email.parser import BytesParser

    with path.open("rb") as handle:
        message = BytesParser(policy=policy.default).parse(handle)
    names = []
    for part in message.iter_attachments():
        names.append(_clean(part.get_filename() or part.get_content_type())[:200])
    return names


_PARSERS: dict[str, Callable[[Path], ParsedDocument]] = {
    PDF: _parse_pdf,
    DOCX: _parse_docx,
    PPTX: _parse_pptx,
    XLSX: _parse_xlsx,
    HTML: _parse_html,
    MARKDOWN: _parse_markdown,
    TEXT: _parse_text,
    EMAIL: _parse_email,
}

# Every kind of horizontal space becomes a plain space: Unicode spaces, tabs, form feeds, control
# characters. Runs of them would otherwise survive into chunks, count as 0 word pieces for the
# embedder and let one chunk hold hundreds of thousands of characters.
_SPACE_CHARS = (
    "\t\x0b\x0c\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u202f\u205f\u3000\u200b\u180e\u0085"
)
# Invisible characters that join or may break a word (zero-width (non-)joiner, word joiner, BOM as
# zero-width no-break space, soft hyphen): removed, so "infor\u00admation" stays one word.
_INVISIBLE_CHARS = "\u200c\u200d\u2060\ufeff\u00ad"
# Pilcrows are permalink markers in generated documentation, not text.
_DROPPED_CHARS = "\u00b6"
_TRANSLATION = {
    **{ord(c): " " for c in _SPACE_CHARS},
    **{c: " " for c in range(32) if chr(c) not in "\n\r"},
    0x7F: " ",
    **{ord(c): None for c in _INVISIBLE_CHARS + _DROPPED_CHARS},
    0x2028: "\n",
    0x2029: "\n",
}
_SPACE_RUN = re.compile(r" {2,}")


def normalize_text(text: str) -> str:
    """Text with every space-like character a plain space, runs collapsed, lines stripped and
    blank lines dropped; newlines keep their role (they separate blocks, rows and lines)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.translate(_TRANSLATION).split("\n")
    cleaned = (_SPACE_RUN.sub(" ", line).strip() for line in lines)
    return "\n".join(line for line in cleaned if line)


def _clean(text: str) -> str:
    return normalize_text(text)
