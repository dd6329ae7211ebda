"""The API keys page in a real browser: a key is created, copied from the page and works against
the API; once revoked it is refused. The page and the API docs run under the CSP header."""

from __future__ import annotations

import httpx
import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from ragsite.middleware import DOCS_POLICY, POLICY
from tests.e2e.conftest import PASSWORD, PHONE, horizontal_overflow, screenshot, sign_in

pytestmark = pytest.mark.e2e


@pytest.fixture
def staff(transactional_db) -> User:
    return User.objects.create_user("staff", password=PASSWORD)


def call_api(base_url: str, key: str) -> int:
    """A fresh client, without the browser's session cookie: only the key can authenticate."""
    response = httpx.get(
        f"{base_url}/api/v1/collections/", headers={"Authorization": f"Bearer {key}"}
    )
    return response.status_code


def create_key(page, name: str) -> str:
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create key").click()
    field = page.get_by_label("The new API key")
    expect(field).to_be_visible()
    return field.input_value()


def test_a_key_made_in_the_browser_works_until_it_is_revoked(page, live_server, staff):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, "staff")
    page.get_by_role("link", name="API keys").click()
    page.wait_for_url("**/keys/")
    expect(page.locator("[data-state=no-keys]")).to_be_visible()

    wiki_key = create_key(page, "wiki bot")
    assert wiki_key.startswith("rsk_")
    expect(page.get_by_text("Authorization: Bearer <key>")).to_be_visible()
    expect(page.get_by_role("link", name="API documentation")).to_have_attribute(
        "href", "/api/v1/docs/"
    )
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == wiki_key
    assert call_api(live_server.url, wiki_key) == 200

    report_key = create_key(page, "nightly report")
    assert wiki_key not in page.content()  # shown once: the next page no longer has it
    expect(page.locator("table.keys tbody tr")).to_have_count(2)
    screenshot(page, "keys-1440", full_page=True)

    wiki_row = page.locator("table.keys tr", has_text="wiki bot")
    wiki_row.get_by_text("Revoke…").click()
    wiki_row.get_by_role("button", name="Revoke wiki bot").click()
    expect(page.get_by_text("revoked: it no longer works")).to_be_visible()
    expect(page.locator("table.keys tr", has_text="wiki bot")).to_contain_text("Revoked")
    assert report_key not in page.content()

    assert call_api(live_server.url, wiki_key) == 401
    assert call_api(live_server.url, report_key) == 200
    expect(page.locator("table.keys tr", has_text="nightly report")).to_contain_text("Active")

    page.set_viewport_size(PHONE)
    assert horizontal_overflow(page) == 0
    screenshot(page, "keys-375", full_page=True)
    # A CSP violation would be reported on the console.
    assert page.events.console_errors == []
    assert page.events.dialogs == []


def test_the_pages_carry_the_policy_header_and_the_api_docs_still_render(page, staff):
    response = page.goto("/accounts/login/")
    assert response.headers["content-security-policy"] == POLICY
    sign_in(page, "staff")

    response = page.goto("/api/v1/docs/")
    assert response.headers["content-security-policy"] == DOCS_POLICY
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("ragsite API")
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/keys/").first).to_be_visible()
    assert page.events.console_errors == []
