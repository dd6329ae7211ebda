"""The whole story in a real browser: an admin creates a collection and uploads files that a real
Celery worker ingests; a staff member asks, watches the answer stream in, and opens its source."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from ingestion.models import Document
from retrieval.models import Message
from tests.documents import FACT, write_markdown, write_pdf
from tests.e2e.conftest import (
    DESKTOP,
    PASSWORD,
    PHONE,
    horizontal_overflow,
    screenshot,
    sign_in,
    sign_out,
    unlabelled_fields,
)

pytestmark = [pytest.mark.e2e, pytest.mark.worker]

INGEST_TIMEOUT_MS = 180_000
ANSWER_TIMEOUT_MS = 60_000

# Counts text nodes the page appends to a streaming answer, to tell streaming from one big write.
COUNT_STREAMED_PIECES = """
() => {
  window.__pieces = 0;
  new MutationObserver(records => {
    for (const r of records) {
      if (r.target.classList && r.target.classList.contains('streaming')) {
        window.__pieces += r.addedNodes.length;
      }
    }
  }).observe(document.getElementById('thread'), {childList: true, subtree: true});
}
"""


@pytest.fixture
def files(tmp_path):
    intro = "This document describes the Zephyr project and its plans in some detail."
    return [
        write_pdf(
            tmp_path / "zephyr-report.pdf",
            [("Introduction", intro), ("Budget", FACT)],
            title="Zephyr report",
        ),
        write_markdown(
            tmp_path / "team-notes.md",
            "Zephyr team notes",
            [("People", "The Zephyr project is led by Ada Moreau from the Lyon office.")],
        ),
    ]


def test_an_admin_uploads_and_a_staff_member_asks(
    page, live_server, worker, transactional_db, files, tmp_path
):
    User.objects.create_superuser("admin", "admin@example.org", PASSWORD)
    staff = User.objects.create_user("staff", password=PASSWORD)

    # --- the admin: a collection, then two files (and an empty one, refused) -------------------
    sign_in(page, "admin")
    page.goto("/console/")
    page.get_by_label("Name").fill("Zephyr")
    page.get_by_label("Description").fill("Project reports and notes")
    page.get_by_label("Visibility").select_option(label="Everyone signed in")
    page.get_by_role("button", name="Create collection").click()
    expect(page.get_by_role("heading", name=re.compile("^Zephyr"))).to_be_visible()

    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    page.get_by_label("Choose files").set_input_files([*files, empty])

    uploads = page.locator("#uploads li")
    expect(uploads).to_have_count(3)
    expect(page.locator("#uploads li.rejected")).to_contain_text("empty.txt is empty.")
    assert page.events.console_errors == [
        "Failed to load resource: the server responded with a status of 400 (Bad Request)"
    ], "the refused upload is the only failed request"
    page.events.console_errors.clear()
    ready_rows = page.locator("#documents tr[data-status=ready]")
    expect(ready_rows).to_have_count(2, timeout=INGEST_TIMEOUT_MS)
    expect(page.locator("#uploads li[data-status=ready]")).to_have_count(2)
    expect(page.locator("#uploads li[data-status=ready]").first).to_contain_text("chunk")
    assert Document.objects.filter(status="ready").count() == 2
    expect(page.locator('[data-counter="ready"]')).to_have_text("2")
    expect(page.locator('[data-counter="queue"]')).to_have_text("0")
    expect(page.locator(".coll-list a[aria-current=true] .count")).to_have_text("2")

    assert unlabelled_fields(page) == []
    assert horizontal_overflow(page) == 0
    screenshot(page, "console-1440", full_page=True)
    page.set_viewport_size(PHONE)
    assert horizontal_overflow(page) == 0
    screenshot(page, "console-375", full_page=True)
    page.set_viewport_size(DESKTOP)
    sign_out(page)

    # --- a staff member asks ------------------------------------------------------------------
    sign_in(page, "staff")
    assert page.url.rstrip("/") == live_server.url
    expect(page.locator("text=Ask about your documents")).to_be_visible()
    page.evaluate(COUNT_STREAMED_PIECES)
    question = page.get_by_label("Your question")
    question.fill("What is the Zephyr project budget for 2027?")
    question.press("Enter")

    answer = page.locator("article.msg-assistant[data-outcome=answered]")
    expect(answer).to_have_count(1, timeout=ANSWER_TIMEOUT_MS)
    expect(answer.locator(".answer-body")).to_contain_text("4.2 million euros")
    assert page.evaluate("window.__pieces") >= 2, "the answer is written in several pieces"
    assert page.evaluate("window.__streamReads") >= 2, "events arrive as they are made"
    assert re.search(r"/c/\d+/$", page.url), "the address is now the conversation's"
    expect(page.locator(".conv-item.active")).to_contain_text("Zephyr project budget")

    # A citation opens its source: title, page, the passage highlighted, a download link.
    citation = answer.locator(".answer-body a.cite").first
    expect(citation).to_be_visible()
    citation.click()
    dialog = page.locator("#source-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("mark")).to_contain_text("4.2 million euros")
    expect(dialog).to_contain_text("zephyr-report.pdf")
    expect(dialog.locator(".source-meta")).to_contain_text("Page")
    download_link = dialog.get_by_role("link", name="Download original")
    with page.expect_download() as download_info:
        download_link.click()
    assert download_info.value.suggested_filename == "zephyr-report.pdf"
    page.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()

    # Thumbs up is stored with the answer.
    answer.get_by_role("button", name="Helpful", exact=True).click()
    expect(answer.get_by_role("button", name="Helpful", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    assert Message.objects.get(role="assistant", conversation__user=staff).feedback == 1

    # A follow-up stays in the same conversation.
    conversation_url = page.url
    question.fill("Which person leads the Zephyr project team from the Lyon office?")
    page.keyboard.press("Control+Enter")
    expect(page.locator("article.msg-assistant[data-outcome]")).to_have_count(
        2, timeout=ANSWER_TIMEOUT_MS
    )
    expect(page.locator("article.msg-assistant").last).to_contain_text("Ada Moreau")
    assert page.url == conversation_url
    expect(page.locator(".conv-item")).to_have_count(1)

    assert unlabelled_fields(page) == []
    assert horizontal_overflow(page) == 0
    screenshot(page, "chat-1440")
    page.set_viewport_size(PHONE)
    page.reload()
    assert horizontal_overflow(page) == 0
    screenshot(page, "chat-375")

    # The full source page (what a link opens without script, or in a new tab).
    page.goto(answer_source_url(page))
    expect(page.locator("mark")).to_contain_text("4.2 million euros")
    assert horizontal_overflow(page) == 0
    screenshot(page, "source-375")

    assert page.events.dialogs == []
    assert page.events.console_errors == []


def answer_source_url(page) -> str:
    return page.locator("article.msg-assistant a.cite").first.get_attribute("href")
