"""The chat page with two models configured: picking an external one says so before anything is
sent, the answer comes from it with only the passages it may receive, and says who answered."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from ingestion.models import Collection
from tests.e2e.conftest import PASSWORD, sign_in
from tests.routing_world import add_passages, stand_ins

__all__ = ["stand_ins"]  # a fixture

pytestmark = pytest.mark.e2e


def test_an_external_model_is_announced_before_sending_and_named_after(
    page, live_server, transactional_db, stand_ins
):
    local, hosted = stand_ins
    User.objects.create_user("staff", password=PASSWORD)
    for name, sensitivity, text in (
        ("Payroll", "in_house", "Salaries are paid on the 25th, reference payroll-kwsecret."),
        ("Public policies", "shareable", "Salary questions go to HR, reference policy-kwpublic."),
    ):
        collection = Collection.objects.create(
            name=name, sensitivity=sensitivity, visibility=Collection.Visibility.EVERYONE
        )
        add_passages(collection, [("Salaries", "Payments", text)])
    sign_in(page, "staff")

    notice = page.locator("#model-notice")
    expect(notice).to_be_hidden()
    page.get_by_label("Model").select_option("hosted")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("Hosted model (external)")
    assert hosted.chat_requests == []  # announced before anything was sent

    question = page.get_by_label("Your question")
    question.fill("When are salaries paid?")
    question.press("Enter")
    answer = page.locator("article.msg-assistant[data-outcome=answered]")
    expect(answer).to_have_count(1, timeout=60_000)

    expect(answer.locator(".answered-by")).to_contain_text("Answered by hosted")
    expect(answer.locator(".answer-body")).to_contain_text("was not used")
    sent = json.dumps([r.body for r in hosted.chat_requests])
    assert "policy-kwpublic" in sent
    assert "payroll-kwsecret" not in sent
    assert local.chat_requests == []
    assert page.events.console_errors == []
