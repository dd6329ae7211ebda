"""The Content-Security-Policy header: on every HTML page, strict everywhere but the API docs, and
never replacing a policy a response set itself."""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.test import Client, RequestFactory

from ragsite.middleware import DOCS_POLICY, POLICY, ContentSecurityPolicyMiddleware

pytestmark = pytest.mark.django_db


def directives(policy: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


def test_html_pages_get_the_strict_policy(user):
    client = Client()
    login = client.get("/accounts/login/")
    assert login["Content-Security-Policy"] == POLICY
    policy = directives(POLICY)
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    client.force_login(user)
    for url in ("/", "/keys/"):
        assert client.get(url)["Content-Security-Policy"] == POLICY, url


def test_only_the_api_docs_page_may_run_inline_code(db, user):
    client = Client()
    client.force_login(user)  # the docs are for signed-in users (#10)
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == DOCS_POLICY
    docs = directives(DOCS_POLICY)
    assert "'unsafe-inline'" in docs["script-src"]
    assert "'unsafe-inline'" in docs["style-src"]
    assert directives(POLICY).keys() == docs.keys()
    assert {k: v for k, v in docs.items() if k not in {"script-src", "style-src"}} == {
        k: v for k, v in directives(POLICY).items() if k not in {"script-src", "style-src"}
    }


def test_json_responses_go_without_and_a_policy_of_its_own_is_kept(db):
    assert "Content-Security-Policy" not in Client().get("/api/v1/collections/")
    own = HttpResponse("<p>hi</p>")
    own["Content-Security-Policy"] = "default-src 'none'"
    middleware = ContentSecurityPolicyMiddleware(lambda request: own)
    assert middleware(RequestFactory().get("/x"))["Content-Security-Policy"] == "default-src 'none'"
