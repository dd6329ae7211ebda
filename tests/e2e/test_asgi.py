"""The answer streams under uvicorn (ASGI), the way ragsite runs in production: the synchronous
answer stream is stepped in Django's thread-sensitive worker thread, one event at a time."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from tests.conftest import make_collection
from tests.documents import FACT, write_pdf
from tests.e2e.conftest import PASSWORD, open_page, sign_in

pytestmark = pytest.mark.e2e


def test_an_answer_streams_under_uvicorn(browser, asgi_server, ingest_file, tmp_path):
    User.objects.create_user("staff", password=PASSWORD)
    collection = make_collection("Zephyr", everyone=True)
    ingest_file(collection, write_pdf(tmp_path / "report.pdf", [("Budget", FACT)]))
    page = open_page(browser, asgi_server)
    try:
        sign_in(page, "staff")
        question = page.get_by_label("Your question")
        question.fill("What is the Zephyr project budget for 2027?")
        question.press("Enter")

        answer = page.locator("article.msg-assistant[data-outcome=answered]")
        expect(answer).to_have_count(1, timeout=60_000)
        expect(answer.locator(".answer-body")).to_contain_text("4.2 million euros")
        assert page.evaluate("window.__streamReads") >= 2, "events arrive as they are made"

        answer.locator("a.cite").first.click()
        expect(page.locator("#source-dialog mark")).to_contain_text("4.2 million euros")
        assert page.events.console_errors == []
    finally:
        page.context.close()
