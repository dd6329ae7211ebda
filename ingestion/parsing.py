"""Parse step: a stored file becomes a list of Blocks (text, kind, page, heading level).

Parsers are chosen by content type, sniffed from the bytes with libmagic. Office formats, HTML,
Markdown, text and e-mail go through unstructured; PDFs are read from their text layer with
pdfminer.six (unstructured's PDF path imports layout-model packages we do not install).
"""

from __future__ import annotations

import re
import statistics
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
        "blocks": [[b.text, b.kind, b.page, b.level, b.page_end, b.header] for b in parsed.blocks],
    }


def parsed_from_dict(data: dict) -> ParsedDocument:
    blocks = []
    for text, kind, page, level, page_end, header in data["blocks"]:
        blocks.append(
            Block(
                str(text),
                kind if kind in {"heading", "text", "list", "table"} else "text",
                int(page) if page is not None else None,
                int(level),
                int(page_end) if page_end is not None else None,
                str(header),
            )
        )
    page_count = data.get("page_count")
    return ParsedDocument(
        blocks=blocks,
        title=str(data.get("title") or ""),
        page_count=int(page_count) if page_count is not None else None,
        metadata=dict(data.get("metadata") or {}),
    )


def preload() -> None:
    """Import every parser library now (the child-process helper does, once, before forking)."""
    import docx  # noqa: F401
    import lxml.html  # noqa: F401
    import pdfminer.high_level  # noqa: F401
    import pypdf  # noqa: F401
    import unstructured.partition.docx  # noqa: F401
    import unstructured.partition.email  # noqa: F401
    import unstructured.partition.html  # noqa: F401
    import unstructured.partition.md  # noqa: F401
    import unstructured.partition.pptx  # noqa: F401
    import unstructured.partition.text  # noqa: F401
    import unstructured.partition.xlsx  # noqa: F401


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


# --- PDF: pdfminer's text layer; headings guessed from font size ---------------------------------
def _parse_pdf(path: Path) -> ParsedDocument:
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams, LTChar, LTTextBox, LTTextLine
    from pdfminer.pdfdocument import PDFPasswordIncorrect
    from pdfminer.pdfparser import PDFSyntaxError

    boxes: list[tuple[int, str, float]] = []
    page_count = 0
    try:
        for page_number, page in enumerate(extract_pages(str(path), laparams=LAParams()), start=1):
            page_count = page_number
            for element in page:
                if not isinstance(element, LTTextBox):
                    continue
                text = _clean(element.get_text())
                if not text:
                    continue
                sizes = [
                    char.size
                    for line in element
                    if isinstance(line, LTTextLine)
                    for char in line
                    if isinstance(char, LTChar)
                ]
                boxes.append((page_number, text, statistics.median(sizes) if sizes else 0.0))
    except PDFPasswordIncorrect as exc:
        raise ParseError("The PDF is encrypted with a password.") from exc
    except PDFSyntaxError as exc:
        raise ParseError(f"The PDF is damaged or not a PDF: {exc}") from exc
    if page_count == 0:
        raise ParseError("The PDF is damaged or has no pages.")
    if not boxes:
        raise ParseError("No extractable text (a scanned PDF needs OCR, which is not enabled).")

    body_size = statistics.median(size for _, _, size in boxes)
    heading_sizes = sorted(
        {round(s, 1) for _, t, s in boxes if s >= body_size * 1.15 and len(t) < 200}, reverse=True
    )
    blocks = []
    for page_number, text, size in boxes:
        rounded = round(size, 1)
        if rounded in heading_sizes and "\n" not in text.strip():
            blocks.append(Block(text, "heading", page_number, min(heading_sizes.index(rounded), 5)))
        else:
            blocks.append(Block(text, "text", page_number))
    title = _pdf_title(path) or next((b.text for b in blocks if b.kind == "heading"), "")
    return ParsedDocument(blocks=blocks, title=title, page_count=page_count)


def _pdf_title(path: Path) -> str:
    try:
        from pypdf import PdfReader

        info = PdfReader(str(path)).metadata
        return _clean(str(info.title)) if info and info.title else ""
    except Exception:  # metadata is a nicety; a damaged info dict must not fail the document
        return ""


# --- everything else: unstructured ----------------------------------------------------------------
_UNSTRUCTURED_KINDS = {"Title": "heading", "ListItem": "list", "Table": "table"}


def _from_elements(elements: list) -> list[Block]:
    blocks = []
    for element in elements:
        category = type(element).__name__
        if category in {"Image", "PageBreak", "Header", "Footer", "PageNumber"}:
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


def _parse_with(partitioner: Callable, **kwargs) -> Callable[[Path], ParsedDocument]:
    def parse_file(path: Path) -> ParsedDocument:
        elements = partitioner()(filename=str(path), **kwargs)
        blocks = _from_elements(elements)
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

    parsed = _parse_with(lambda: partition_docx)(path)
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

    return _parse_with(lambda: partition_pptx)(path)


def _parse_xlsx(path: Path) -> ParsedDocument:
    _check_zip(path)
    from unstructured.partition.xlsx import partition_xlsx

    return _parse_with(lambda: partition_xlsx, find_subtable=False)(path)


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


# Page furniture that is not content: navigation bars, sidebars, headers and footers.
_BOILERPLATE_XPATH = (
    "//script | //style | //noscript | //template | //nav | //header | //footer | //aside"
    " | //*[@role='navigation' or @role='banner' or @role='contentinfo' or @role='search']"
    " | //*[contains(concat(' ', normalize-space(@class), ' '), ' footer ')]"
    " | //*[contains(concat(' ', normalize-space(@class), ' '), ' sidebar ')]"
    " | //*[contains(concat(' ', normalize-space(@class), ' '), ' sphinxsidebar ')]"
    " | //a[contains(concat(' ', normalize-space(@class), ' '), ' headerlink ')]"
)


def _parse_html(path: Path) -> ParsedDocument:
    import lxml.html
    from unstructured.partition.html import partition_html

    raw = path.read_bytes()
    parser = lxml.html.HTMLParser()
    try:
        tree = lxml.html.fromstring(raw, parser=parser)
    except (lxml.etree.ParserError, ValueError) as exc:
        raise ParseError("The HTML page has no content.") from exc
    # libxml2 stops descending at 256 levels (and at 10 MB text runs) and silently drops the
    # rest: refuse the page with the reason rather than index part of it.
    limits = [e.message for e in parser.error_log if e.type_name == "ERR_RESOURCE_LIMIT"]
    if limits:
        what = "nested too deeply" if "depth" in limits[0].lower() else "too large in one piece"
        raise ParseError(f"The HTML page is {what} to be read safely ({limits[0].strip()}).")
    page_title = _clean(tree.findtext(".//title") or "")
    for node in tree.xpath(_BOILERPLATE_XPATH):
        if node.getparent() is not None:
            node.drop_tree()
    main = tree.xpath("//main | //*[@role='main']")
    html = lxml.html.tostring(main[0] if main else tree, encoding="unicode")
    blocks = _from_elements(partition_html(text=html))
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
