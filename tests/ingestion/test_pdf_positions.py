"""Where each PDF passage is on its page, stored at ingestion for the citation viewer: every box a
chunk keeps is on the chunk's pages and holds exactly that chunk's text, read back from the PDF
independently of the parser (pdfminer's characters inside the box)."""

from __future__ import annotations

import re

import pytest

from ingestion.chunking import merge_boxes
from ingestion.models import Chunk
from tests.conftest import make_collection
from tests.documents import write_pdf

# One sentence a line; 32 tokens (the chunker's least budget) holds one sentence, never two, so
# each sentence is a chunk of its own and page 2 holds two that must not share a box.
PEARS = (
    "Pear trees standing in the northern orchard of the Valmont estate are pruned by hand every "
    "February."
)
WALNUTS = (
    "Walnut trees growing along the southern slope of the Valmont estate are never pruned by "
    "anyone at all."
)
PAGES = [
    ("Orchards", "The Valmont estate keeps three orchards, described one page each."),
    ("Harvest", f"{PEARS}\n{WALNUTS}"),
    ("Storage", "Harvested fruit waits in the cool cellar beneath the old stone barn."),
]
WORD = re.compile(r"\w+")


def words(text: str) -> set[str]:
    return {w.casefold() for w in WORD.findall(text)}


def text_in_box(path, page_number: int, box: list[float]) -> str:
    """The characters pdfminer finds with their centre inside `box` on that page."""
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LTChar, LTTextBox, LTTextLine

    page = list(extract_pages(str(path)))[page_number - 1]
    left, top, right, bottom = box
    found = []
    for element in page:
        if not isinstance(element, LTTextBox):
            continue
        for line in element:
            if not isinstance(line, LTTextLine):
                continue
            for char in line:
                if not isinstance(char, LTChar):
                    continue
                x = ((char.x0 + char.x1) / 2 - page.x0) / page.width
                y = (page.y1 - (char.y0 + char.y1) / 2) / page.height
                found.append(char.get_text() if left <= x <= right and top <= y <= bottom else " ")
            found.append(" ")
    return "".join(found)


@pytest.fixture
def one_sentence_chunks(settings):
    settings.RAG_CHUNK_TOKENS = 32
    settings.RAG_CHUNK_OVERLAP = 0


def test_each_pdf_chunk_stores_the_boxes_that_hold_its_text(
    one_sentence_chunks, ingest_file, tmp_path
):
    path = write_pdf(tmp_path / "orchards.pdf", PAGES)
    document = ingest_file(make_collection("Orchards"), path)
    chunks = list(Chunk.objects.filter(document=document).order_by("ordinal"))
    assert [c.page_start for c in chunks] == [1, 2, 2, 3]

    for chunk in chunks:
        assert chunk.page_boxes, f"chunk {chunk.ordinal} has no boxes"
        inside = ""
        for page, *box in chunk.page_boxes:
            assert chunk.page_start <= page <= chunk.page_end
            assert 0 <= box[0] < box[2] <= 1
            assert 0 <= box[1] < box[3] <= 1
            inside += " " + text_in_box(path, page, box)
        assert words(chunk.text) <= words(inside), (chunk.text, inside)
        # Nothing of the other passages: the boxes are the passage's own lines.
        others = set().union(*(words(c.text) for c in chunks if c.pk != chunk.pk))
        assert not (words(inside) - words(chunk.text)) & (others - words(chunk.text))

    pears, walnuts = chunks[1], chunks[2]
    assert pears.text == PEARS
    assert walnuts.text == WALNUTS
    assert pears.page_boxes[0][4] <= walnuts.page_boxes[0][2], "the pears are above the walnuts"


def test_a_paragraphs_lines_merge_into_one_box_and_separate_places_stay_apart():
    line = (2, 0.05, 0.10, 0.95, 0.12)
    next_line = (2, 0.05, 0.125, 0.60, 0.145)  # the paragraph's next line, a little apart
    far_below = (2, 0.05, 0.30, 0.95, 0.32)  # another paragraph, further down
    next_page = (3, 0.05, 0.10, 0.95, 0.12)
    assert merge_boxes([line, next_line, line, far_below, next_page]) == (
        (2, 0.05, 0.10, 0.95, 0.145),
        far_below,
        next_page,
    )


def test_boxes_are_measured_on_the_crop_box_a_viewer_shows(tmp_path):
    """pdf.js shows a page's crop box (print files crop bleed and marks): boxes are shares of it."""
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import RectangleObject

    from ingestion.parsing import PDF, parse_here

    plain = write_pdf(tmp_path / "plain.pdf", PAGES)
    writer = PdfWriter(clone_from=PdfReader(plain))
    width, height = (float(v) for v in writer.pages[0].mediabox.upper_right)
    writer.pages[0].cropbox = RectangleObject((20, 30, width - 15, height - 10))
    cropped = tmp_path / "cropped.pdf"
    writer.write(cropped)

    def first_line(path) -> tuple[float, ...]:
        block = next(b for b in parse_here(path, PDF).blocks if b.page == 1 and b.kind == "text")
        return block.line_boxes[0][2:]

    left, top, right, bottom = first_line(plain)
    crop_width, crop_height = width - 35, height - 40
    expected = (
        (left * width - 20) / crop_width,
        (top * height - 10) / crop_height,
        (right * width - 20) / crop_width,
        (bottom * height - 10) / crop_height,
    )
    assert first_line(cropped) == pytest.approx(expected, abs=2e-4)
