"""Each supported format parses to chunks that keep their text, headings and pages."""

from __future__ import annotations

import pytest

from ingestion.models import Document
from tests.documents import FACT, write_all_formats

pytestmark = pytest.mark.django_db

FORMATS = ["pdf", "docx", "pptx", "xlsx", "html", "md", "txt", "eml"]
CONTENT_TYPES = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "html": "text/html",
    "md": "text/markdown",
    "txt": "text/plain",
    "eml": "message/rfc822",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_all_formats(tmp_path_factory.mktemp("formats"))


@pytest.mark.parametrize("kind", FORMATS)
def test_every_format_becomes_ready_chunks_with_the_fact(kind, files, collection, ingest_file):
    document = ingest_file(collection, files[kind])

    assert document.status == Document.Status.READY, document.error
    assert document.content_type == CONTENT_TYPES[kind]
    chunks = list(document.chunks.order_by("ordinal"))
    assert chunks
    assert document.chunk_count == len(chunks)
    assert any("4.2 million euros" in chunk.text for chunk in chunks)
    assert all(chunk.embedding is not None and len(chunk.embedding) == 384 for chunk in chunks)


@pytest.mark.parametrize("kind", ["pdf", "docx", "html", "md", "pptx"])
def test_the_fact_sits_under_its_budget_heading(kind, files, collection, ingest_file):
    document = ingest_file(collection, files[kind])

    fact_chunk = next(c for c in document.chunks.all() if "4.2 million" in c.text)
    assert "Budget" in fact_chunk.heading


@pytest.mark.parametrize("kind", ["pdf", "pptx"])
def test_paged_formats_keep_page_numbers(kind, files, collection, ingest_file):
    document = ingest_file(collection, files[kind])

    fact_chunk = next(c for c in document.chunks.all() if "4.2 million" in c.text)
    assert fact_chunk.page_start == 2
    assert document.page_count == 2


def test_html_navigation_and_footer_are_not_indexed(files, collection, ingest_file):
    document = ingest_file(collection, files["html"])

    text = " ".join(c.text for c in document.chunks.all())
    assert "Next page" not in text
    assert "Copyright footer" not in text
    assert document.title == "Zephyr report"


def test_pdf_title_comes_from_its_metadata(files, collection, ingest_file):
    assert ingest_file(collection, files["pdf"]).title == "Zephyr report"


def test_email_title_is_its_subject(files, collection, ingest_file):
    assert ingest_file(collection, files["eml"]).title == "Zephyr budget"


def test_fact_text_is_searchable_by_full_text(files, collection, ingest_file):
    document = ingest_file(collection, files["md"])

    matches = document.chunks.extra(
        where=["search_vector @@ websearch_to_tsquery('english', %s)"],
        params=["Zephyr budget euros"],
    )
    assert matches.exists()
    assert FACT in " ".join(c.text for c in matches)


def test_a_text_note_mentioning_tags_is_read_as_text_not_html(tmp_path, collection, ingest_file):
    note = tmp_path / "memo.txt"
    note.write_text(
        "Security memo\n\nNever paste <script>alert(1)</script> into the wiki editor.\n"
    )

    document = ingest_file(collection, note)

    assert document.content_type == "text/plain"
    assert "<script>alert(1)</script>" in " ".join(c.text for c in document.chunks.all())


def test_a_real_html_page_named_txt_is_still_html(tmp_path, collection, ingest_file):
    page = tmp_path / "saved.txt"
    page.write_text(
        "<!DOCTYPE html><html><body><h1>Saved</h1><p>Saved page body.</p></body></html>"
    )

    assert ingest_file(collection, page).content_type == "text/html"
