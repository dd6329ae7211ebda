"""The chat page in a real browser: hostile documents stay text, the keyboard is enough, focus is
visible, every field has a label, and nothing scrolls sideways on a phone."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from tests.conftest import make_collection
from tests.documents import write_pdf, write_text
from tests.e2e.conftest import (
    DESKTOP,
    PASSWORD,
    PHONE,
    horizontal_overflow,
    screenshot,
    sign_in,
    unlabelled_fields,
)

pytestmark = pytest.mark.e2e

SCRIPT = "<script>alert(1)</script>"
JS_LINK = "[x](javascript:alert(1))"
HOSTILE_PAGES = [
    (
        "Quokka gateway",
        f"The Quokka gateway escapes {SCRIPT} in every page it serves. "
        f"See {JS_LINK} for the Quokka gateway escaping rules.",
    )
]

FOCUS_OUTLINE_JS = """
() => {
  const style = getComputedStyle(document.activeElement);
  return {tag: document.activeElement.tagName, style: style.outlineStyle,
          width: parseFloat(style.outlineWidth)};
}
"""


@pytest.fixture
def staff(transactional_db) -> User:
    return User.objects.create_user("staff", password=PASSWORD)


def test_a_hostile_document_renders_as_harmless_text(
    page, live_server, staff, ingest_file, tmp_path
):
    collection = make_collection("Security", everyone=True)
    ingest_file(collection, write_pdf(tmp_path / "gateway.pdf", HOSTILE_PAGES))
    sign_in(page, "staff")

    question = page.get_by_label("Your question")
    question.fill("How does the Quokka gateway escape pages? <img src=x onerror=alert(2)>")
    question.press("Enter")
    answer = page.locator("article.msg-assistant[data-outcome=answered]")
    expect(answer).to_have_count(1, timeout=60_000)

    # The literal text is on screen, nothing ran, and no link points at javascript:.
    expect(answer.locator(".answer-body")).to_contain_text(SCRIPT)
    expect(page.locator(".msg-user .bubble")).to_contain_text("<img src=x onerror=alert(2)>")
    expect(page.locator(".conv-item a")).to_contain_text("<img src=x")
    assert page.locator("script:not([src])").count() == 0
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("[href^='javascript' i]").count() == 0

    answer.locator("a.cite").first.click()
    passage = page.locator("#source-dialog .passage")
    expect(passage).to_contain_text(SCRIPT)
    expect(passage).to_contain_text(JS_LINK)
    assert page.locator("#source-dialog a[href^='javascript' i]").count() == 0

    page.reload()  # the server's rendering of the stored conversation, too
    expect(page.locator("article.msg-assistant .answer-body")).to_contain_text(SCRIPT)
    assert page.events.dialogs == []
    assert page.events.console_errors == []


def test_the_keyboard_is_enough_and_focus_is_visible(
    page, live_server, staff, ingest_file, tmp_path
):
    collection = make_collection("Handbook", everyone=True)
    ingest_file(
        collection,
        write_text(
            tmp_path / "travel.txt",
            "Travel policy\n\nStaff travel by train for any journey under six hours.",
        ),
    )
    sign_in(page, "staff")

    # Tab from the top of the page reaches the question box; every stop shows an outline.
    page.locator("body").focus()
    for _ in range(25):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUS_OUTLINE_JS)
        assert focused["style"] != "none", focused
        assert focused["width"] >= 2, focused
        if page.evaluate("document.activeElement.id") == "ask-question":
            break
    else:
        pytest.fail("the question box cannot be reached with Tab")

    page.keyboard.type("How do staff travel for short journeys?")
    page.keyboard.press("Shift+Enter")  # a new line, not a send
    assert page.locator(".msg-user").count() == 0
    page.keyboard.press("Enter")
    expect(page.locator("article.msg-assistant[data-outcome]")).to_have_count(1, timeout=60_000)
    expect(page.locator("article.msg-assistant")).to_contain_text("train")


def test_pages_have_labels_and_fit_a_phone(page, live_server, transactional_db):
    User.objects.create_user("staff", password=PASSWORD)
    User.objects.create_superuser("admin", "admin@example.org", PASSWORD)

    for size in (PHONE, DESKTOP):
        page.set_viewport_size(size)
        page.goto("/accounts/login/")
        assert unlabelled_fields(page) == []
        assert horizontal_overflow(page) == 0
    screenshot(page, "login-1440")

    sign_in(page, "admin")
    page.goto("/console/")  # no collection yet: the create form is open
    expect(page.get_by_label("Name")).to_be_visible()
    assert unlabelled_fields(page) == []
    assert horizontal_overflow(page) == 0
    page.set_viewport_size(PHONE)
    assert horizontal_overflow(page) == 0

    page.goto("/")
    expect(page.locator("[data-state=no-documents]")).to_be_visible()
    assert unlabelled_fields(page) == []
    assert horizontal_overflow(page) == 0
    screenshot(page, "chat-empty-375")
    # On a phone the conversation list opens from the menu button.
    expect(page.locator("#sidebar")).to_be_hidden()
    page.get_by_role("button", name="Conversations").click()
    expect(page.locator("#sidebar")).to_be_visible()
    assert horizontal_overflow(page) == 0
    assert page.events.console_errors == []
