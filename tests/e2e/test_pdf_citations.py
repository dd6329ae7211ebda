"""A PDF citation opens its page in Chromium: pdf.js renders the cited page from the permission-
checked download, the cited passage highlighted on it (from the boxes stored at ingestion, or,
for a passage stored without them, by its text), with previous and next page buttons. Someone
who may not read the collection gets neither the page nor the file."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from playwright.sync_api import expect

from ingestion.models import Chunk
from retrieval.models import Citation, Conversation, Message
from tests.conftest import make_collection
from tests.e2e.conftest import PASSWORD, screenshot, sign_in
from tests.ingestion.test_pdf_positions import PAGES, PEARS, WALNUTS, words

pytestmark = pytest.mark.e2e

HIGHLIGHTED_TEXT_JS = """
root => Array.from(root.querySelectorAll('.textLayer .pdf-cited')).map(s => s.textContent).join(' ')
"""


def highlighted(viewer) -> set[str]:
    return words(viewer.evaluate(HIGHLIGHTED_TEXT_JS))


def expect_page(viewer, number: int) -> None:
    expect(viewer).to_have_attribute("data-rendered-page", str(number))
    expect(viewer).to_have_attribute("data-state", "ready")
    expect(viewer.locator("[data-pdf-status]")).to_have_text(f"Page {number} of 3")


@pytest.fixture
def cited_pdf(transactional_db, settings, ingest_file, tmp_path):
    """A reader's answer citing the passage on page 2 of a 3-page PDF of a restricted collection."""
    from tests.documents import write_pdf

    settings.RAG_CHUNK_TOKENS = 32  # one sentence a chunk: page 2 holds two passages
    settings.RAG_CHUNK_OVERLAP = 0
    reader = User.objects.create_user("reader", password=PASSWORD)
    collection = make_collection("Orchards", users=[reader])
    document = ingest_file(collection, write_pdf(tmp_path / "orchards.pdf", PAGES))
    chunk = Chunk.objects.get(document=document, text=PEARS)
    assert chunk.page_start == 2
    assert chunk.page_boxes
    conversation = Conversation.objects.create(user=reader, title="Pruning")
    Message.objects.create(conversation=conversation, role="user", content="When are pears pruned?")
    answer = Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="Pear trees are pruned by hand every February [1].",
        outcome=Message.Outcome.ANSWERED,
    )
    Citation.objects.create(
        message=answer,
        number=1,
        document=document,
        chunk=chunk,
        document_title=document.title,
        page=chunk.page_start,
        heading=chunk.heading,
        snippet=chunk.text,
    )
    return reader, collection, document, chunk, conversation, answer


def test_a_pdf_citation_opens_its_page_with_the_passage_highlighted(page, live_server, cited_pdf):
    reader, collection, document, chunk, conversation, answer = cited_pdf
    sign_in(page, "reader")
    page.goto(f"/c/{conversation.pk}/")

    # The citation opens the cited page, page 2, rendered with the passage highlighted on it.
    page.locator("article.msg-assistant a.cite").first.click()
    viewer = page.locator("#source-dialog [data-pdf-viewer]")
    expect_page(viewer, 2)
    expect(viewer.locator("canvas")).to_have_count(1)
    # pdf.js runs its worker (the CSP allows it from 'self'; blocked, it would fall back quietly).
    assert any(w.url.endswith("/static/vendor/pdfjs/pdf.worker.min.mjs") for w in page.workers)
    expect(viewer.locator("[data-pdf-highlight]")).to_have_count(1)
    expect(viewer.locator(".textLayer")).to_contain_text("Walnut trees")  # on the page...
    cited = highlighted(viewer)
    assert words(PEARS) <= cited, cited
    assert not cited & (words(WALNUTS) - words(PEARS)), "...but not highlighted: not cited"
    screenshot(page, "pdf-citation-dialog")
    expect(
        page.locator("#source-dialog").get_by_role("link", name="Download original")
    ).to_have_attribute("href", reverse("web:download", args=[document.pk]))

    # Next and previous page; nothing is highlighted where the passage is not.
    viewer.get_by_role("button", name="Next page").click()
    expect_page(viewer, 3)
    expect(viewer.locator(".textLayer")).to_contain_text("cool cellar")
    expect(viewer.locator("[data-pdf-highlight]")).to_have_count(0)
    expect(viewer.get_by_role("button", name="Next page")).to_be_disabled()
    viewer.get_by_role("button", name="Previous page").click()
    expect_page(viewer, 2)
    assert words(PEARS) <= highlighted(viewer)
    viewer.get_by_role("button", name="Previous page").click()
    expect_page(viewer, 1)
    expect(viewer.locator(".textLayer")).to_contain_text("three orchards")
    expect(viewer.get_by_role("button", name="Previous page")).to_be_disabled()

    # A passage stored before boxes were kept: the source page opens on its page and finds the
    # passage by its text in the text layer.
    Chunk.objects.filter(pk=chunk.pk).update(page_boxes=[])
    page.goto(reverse("web:source", args=[answer.pk, 1]))
    viewer = page.locator("[data-pdf-viewer]")
    expect_page(viewer, 2)
    expect(viewer.locator("[data-pdf-highlight]").first).to_be_visible()
    screenshot(page, "pdf-citation-page")
    cited = highlighted(viewer)
    assert words(PEARS) <= cited, cited
    assert not cited & (words(WALNUTS) - words(PEARS)), cited

    assert page.events.dialogs == []
    assert page.events.console_errors == []

    # Once the reader may no longer read the collection: neither the page nor the bytes.
    client = Client()
    client.force_login(reader)
    source_url = reverse("web:source", args=[answer.pk, 1])
    download_url = reverse("web:download", args=[document.pk])
    response = client.get(download_url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"%PDF")
    collection.reader_users.remove(reader)
    assert client.get(source_url).status_code == 404
    assert client.get(source_url, {"partial": "1"}).status_code == 404
    assert client.get(download_url).status_code == 404
    outsider = User.objects.create_user("outsider", password=PASSWORD)
    client.force_login(outsider)
    assert client.get(download_url).status_code == 404
