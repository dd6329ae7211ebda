"""Who may look at the API's description, and how often a user name may be guessed at (#10):
the OpenAPI schema and its docs page need a signed-in session or an API key; sign-in lockout
counts per (user name, address) and, with a higher limit, per user name from any address."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from core import apikeys

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh():
    cache.clear()


# --- the schema and the docs page --------------------------------------------------------------
def test_anonymous_visitors_get_neither_the_schema_nor_the_docs():
    schema = APIClient().get("/api/v1/schema/?format=json")
    assert schema.status_code == 401
    assert schema.json()["error"]["code"] == "not_authenticated"
    assert b"/api/v1/ask" not in schema.content
    docs = Client().get("/api/v1/docs/")
    assert docs.status_code == 302
    assert docs["Location"] == "/accounts/login/?next=/api/v1/docs/"


def test_a_key_or_a_session_gets_them(user):
    keyed = APIClient()
    keyed.credentials(HTTP_AUTHORIZATION=f"Bearer {apikeys.create_key(user, 'ci')[1]}")
    schema = keyed.get("/api/v1/schema/?format=json")
    assert schema.status_code == 200
    assert "/api/v1/ask" in schema.json()["paths"]
    browser = Client()
    browser.force_login(user)
    docs = browser.get("/api/v1/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content
    assert browser.get("/api/v1/schema/?format=json").status_code == 200


def test_a_bad_key_is_told_so_on_the_docs_page_too():
    response = Client().get("/api/v1/docs/", HTTP_AUTHORIZATION="Bearer rsk_not-a-real-key-at-all")
    assert response.status_code == 401


# --- sign-in lockout -----------------------------------------------------------------------------
def sign_in(password: str, address: str) -> int:
    client = Client(REMOTE_ADDR=address)
    response = client.post("/accounts/login/", {"username": "victim", "password": password})
    return response.status_code


@pytest.fixture
def victim(settings) -> User:
    settings.AXES_ENABLED = True
    AccessAttempt.objects.all().delete()
    return User.objects.create_user("victim", password="the-right-long-password")


def test_one_address_is_locked_out_after_the_failure_limit(victim, settings):
    statuses = [sign_in("wrong", "10.0.0.1") for _ in range(settings.AXES_FAILURE_LIMIT)]
    assert statuses[-1] == 429
    assert sign_in("the-right-long-password", "10.0.0.1") == 429, "locked, even with the password"
    assert sign_in("the-right-long-password", "10.0.0.2") == 302, "another address still may"


def test_guesses_spread_over_many_addresses_lock_the_user_name(victim, settings):
    """A few guesses from each of many addresses never reach the per-address limit; the
    per-user cap (higher) stops them all the same, from every address."""
    settings.AXES_FAILURE_LIMIT = 3
    settings.RAG_LOGIN_USER_FAILURE_LIMIT = 8
    statuses = [sign_in("wrong", f"10.1.0.{i // 2 + 1}") for i in range(8)]  # 2 per address
    assert statuses == [200] * 8, "each address stays under its own limit"
    assert sign_in("wrong", "10.1.1.1") == 429
    assert sign_in("the-right-long-password", "10.9.9.9") == 429, "from any address, for a while"
    other = Client(REMOTE_ADDR="10.9.9.9").post(
        "/accounts/login/", {"username": "someone-else", "password": "x"}
    )
    assert other.status_code == 200, "other user names are not affected"


def test_below_the_cap_the_right_password_still_works(victim, settings):
    settings.RAG_LOGIN_USER_FAILURE_LIMIT = 8
    for i in range(7):
        sign_in("wrong", f"10.2.0.{i + 1}")
    assert sign_in("the-right-long-password", "10.2.1.1") == 302
