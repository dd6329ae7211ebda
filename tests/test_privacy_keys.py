"""API keys (#10): a key cannot make, list or revoke keys (only a signed-in session can), a user
has at most RAG_MAX_API_KEYS active keys, and rate limits count per user (all keys and the web
page together), with counters shared across processes when Redis is configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import uuid
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from core import apikeys
from core.models import ApiKey
from tests.conftest import REDIS_URL, redis_available, required

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()


def bearer(plaintext: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


def session(user: User) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


# --- a key cannot manage keys -------------------------------------------------------------------
def test_a_key_cannot_create_list_or_revoke_keys(user):
    _first, plaintext = apikeys.create_key(user, "tool")
    other, _ = apikeys.create_key(user, "other tool")
    client = bearer(plaintext)

    created = client.post("/api/v1/keys/", {"name": "minted"}, format="json")
    assert created.status_code == 403
    assert created.json()["error"]["code"] == "permission_denied"
    assert "sign in" in created.json()["error"]["message"]
    assert client.get("/api/v1/keys/").status_code == 403
    assert client.get(f"/api/v1/keys/{other.pk}/").status_code == 403
    assert client.delete(f"/api/v1/keys/{other.pk}/").status_code == 403

    assert ApiKey.objects.filter(user=user).count() == 2
    other.refresh_from_db()
    assert other.revoked_at is None
    assert client.get("/api/v1/conversations/").status_code == 200, "the key still works"


def test_a_signed_in_session_manages_keys(user):
    client = session(user)
    created = client.post("/api/v1/keys/", {"name": "report builder"}, format="json")
    assert created.status_code == 201
    key_id = created.json()["id"]
    assert client.delete(f"/api/v1/keys/{key_id}/").status_code == 204
    assert ApiKey.objects.get(pk=key_id).revoked_at is not None


# --- the cap -----------------------------------------------------------------------------------
def test_active_keys_are_capped_with_a_clear_message(user, settings):
    settings.RAG_MAX_API_KEYS = 2
    client = session(user)
    made = [client.post("/api/v1/keys/", {"name": f"k{i}"}, format="json") for i in range(3)]
    assert [r.status_code for r in made] == [201, 201, 400]
    error = made[2].json()["error"]
    assert error["code"] == "too_many_keys"
    assert "2 active API keys" in error["message"]
    assert "Revoke" in error["message"]
    assert ApiKey.objects.filter(user=user).count() == 2

    client.delete(f"/api/v1/keys/{made[0].json()['id']}/")
    again = client.post("/api/v1/keys/", {"name": "k3"}, format="json")
    assert again.status_code == 201, "a revoked key frees its place"


def test_the_keys_page_says_so_too_also_for_an_admin_acting_for_a_user(user, settings):
    settings.RAG_MAX_API_KEYS = 1
    apikeys.create_key(user, "only")
    own = Client()
    own.force_login(user)
    response = own.post(reverse("web:keys"), {"name": "second"})
    assert response.status_code == 400
    assert "the most allowed" in response.content.decode()

    admin = User.objects.create_user("keyadmin", password="a-long-test-password", is_staff=True)
    admin.user_permissions.add(Permission.objects.get(codename="change_apikey"))
    acting = Client()
    acting.force_login(admin)
    response = acting.post(f"{reverse('web:keys')}?user={user.pk}", {"name": "for them"})
    assert response.status_code == 400
    assert ApiKey.objects.filter(user=user).count() == 1


# --- per-user rate limits ----------------------------------------------------------------------
def test_more_keys_do_not_buy_more_requests(user, settings):
    settings.RAG_API_RATE = "3/min"
    first = bearer(apikeys.create_key(user, "one")[1])
    second = bearer(apikeys.create_key(user, "two")[1])
    statuses = [
        first.get("/api/v1/conversations/").status_code,
        second.get("/api/v1/conversations/").status_code,
        session(user).get("/api/v1/conversations/").status_code,
        second.get("/api/v1/conversations/").status_code,
        first.get("/api/v1/conversations/").status_code,
    ]
    assert statuses == [200, 200, 200, 429, 429]
    someone_else = User.objects.create_user("other", password="a-long-test-password")
    assert (
        bearer(apikeys.create_key(someone_else, "x")[1]).get("/api/v1/conversations/").status_code
        == 200
    )


def test_the_web_ask_shares_the_answer_budget(user, settings):
    settings.RAG_ASK_RATE = "1/min"
    page = Client()
    page.force_login(user)
    first = page.post(reverse("web:ask"), {"question": "Where is the travel policy?"})
    assert first.status_code == 302  # answered (nothing found), back to the conversation
    second = page.post(reverse("web:ask"), {"question": "And the leave policy?"})
    assert second.status_code == 429
    assert int(second["Retry-After"]) > 0
    assert "wait a moment" in second.content.decode()
    api = bearer(apikeys.create_key(user, "tool")[1])
    asked = api.post("/api/v1/ask", {"question": "What about expenses?"}, format="json")
    assert asked.status_code == 429, "the API's answers count against the same budget"


# --- counters shared across processes ----------------------------------------------------------
def settings_in_a_process(**env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k not in {"RAG_CACHE_URL", "REDIS_URL"}}
    environment.update(env)
    environment["DJANGO_SETTINGS_MODULE"] = "ragsite.settings"
    code = "from django.conf import settings; import json; print(json.dumps(settings.CACHES))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])["default"]


def test_a_redis_broker_puts_the_counters_in_redis_next_to_the_queue():
    cache_settings = settings_in_a_process(CELERY_BROKER_URL="redis://queue.internal:6379/0")
    assert cache_settings["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert cache_settings["LOCATION"] == "redis://queue.internal:6379/1"
    explicit = settings_in_a_process(RAG_CACHE_URL="redis://cache.internal:6379/5")
    assert explicit["LOCATION"] == "redis://cache.internal:6379/5"
    local = settings_in_a_process(CELERY_BROKER_URL="filesystem://")
    assert local["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"


THROTTLE_IN_ANOTHER_PROCESS = """
import sys, types, django
django.setup()
from retrieval.api.common import AskRateThrottle
user = types.SimpleNamespace(pk=int(sys.argv[1]), is_authenticated=True)
request = types.SimpleNamespace(user=user, META={"REMOTE_ADDR": "127.0.0.1"})
print([AskRateThrottle().allow_request(request, None) for _ in range(2)])
"""


@required(redis_available(), "no Redis on 127.0.0.1:6379")
def test_with_redis_every_process_counts_against_one_budget(settings):
    """Another process spends two of three answers; this process gets one more, not three."""
    from django.core.cache import cache as shared

    from retrieval.api.common import AskRateThrottle

    location = REDIS_URL.rsplit("/", 1)[0] + "/3"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": location,
            "KEY_PREFIX": "ragsite",  # what settings.py gives every process
        }
    }
    settings.RAG_ASK_RATE = "3/min"
    user_pk = 10_000_000 + uuid.uuid4().int % 1_000_000  # a user no other run counts for
    environment = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    environment |= {
        "DJANGO_SETTINGS_MODULE": "ragsite.settings",
        "RAG_CACHE_URL": location,
        "RAG_ASK_RATE": "3/min",
    }
    try:
        out = subprocess.run(
            [sys.executable, "-c", THROTTLE_IN_ANOTHER_PROCESS, str(user_pk)],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == "[True, True]"
        user = types.SimpleNamespace(pk=user_pk, is_authenticated=True)
        request = types.SimpleNamespace(user=user, META={"REMOTE_ADDR": "127.0.0.1"})
        assert [AskRateThrottle().allow_request(request, None) for _ in range(2)] == [True, False]
    finally:
        shared.delete(f"throttle_ask_user-{user_pk}")
