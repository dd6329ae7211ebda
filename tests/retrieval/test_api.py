"""The retrieval API: API keys, search, ask (JSON and server-sent events), conversations, rate
limits and error shapes, through DRF's test client with real rows and the real pipeline."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from core import apikeys
from core.models import ApiKey, AuditEvent
from ingestion.models import Collection, Document
from retrieval.models import Conversation, Message
from tests.conftest import make_collection
from tests.documents import FACT, write_markdown
from tests.keys import key_user

pytestmark = pytest.mark.django_db

QUESTION = "What is the Zephyr project budget for 2027?"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()


def bearer(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def client_for(user: User) -> APIClient:
    return bearer(apikeys.create_key(user, "tests")[1])


@pytest.fixture
def handbook(collection, ingest_file, tmp_path) -> Document:
    path = write_markdown(
        tmp_path / "zephyr.md",
        "Zephyr report",
        [("Introduction", "The Zephyr project builds wind turbines."), ("Budget", FACT)],
    )
    return ingest_file(collection, path)


def sse_events(response) -> list[tuple[str, dict]]:
    text = b"".join(response.streaming_content).decode()
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


# --- API keys -----------------------------------------------------------------------------------


def test_a_new_key_is_shown_once_and_only_its_hash_is_stored(user):
    client = APIClient()
    client.force_login(user)
    response = client.post("/api/v1/keys/", {"name": "report builder"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["key"].startswith("rsk_")
    stored = ApiKey.objects.get(pk=body["id"])
    assert stored.key_hash == hashlib.sha256(body["key"].encode()).hexdigest()
    assert body["key"] not in {stored.key_hash, stored.prefix, stored.name}
    assert body["key"].startswith(stored.prefix)
    listed = client.get("/api/v1/keys/").json()["results"]
    assert listed == [{k: v for k, v in body.items() if k != "key"}]
    assert AuditEvent.objects.filter(action="api_key_created", user=user).exists()


def test_a_key_acts_as_its_user_until_revoked(user):
    key, plaintext = apikeys.create_key(user, "tool")
    client = bearer(plaintext)
    assert client.get("/api/v1/conversations/").status_code == 200
    signed_in = APIClient()
    signed_in.force_login(user)  # keys are revoked from a session (#10: a key cannot)
    response = signed_in.delete(f"/api/v1/keys/{key.pk}/")
    assert response.status_code == 204
    key.refresh_from_db()
    assert key.revoked_at is not None
    response = client.get("/api/v1/conversations/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_nobody_sees_or_revokes_another_users_keys(user):
    other = User.objects.create_user("other", password="a-long-test-password")
    theirs, _ = apikeys.create_key(other, "theirs")
    apikeys.create_key(user, "tests")
    client = APIClient()
    client.force_login(user)  # keys are managed from a session (#10)
    assert client.get(f"/api/v1/keys/{theirs.pk}/").status_code == 404
    assert client.delete(f"/api/v1/keys/{theirs.pk}/").status_code == 404
    assert [k["name"] for k in client.get("/api/v1/keys/").json()["results"]] == ["tests"]
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_authenticate_key_refuses_wrong_revoked_and_inactive_users_keys(user):
    key, plaintext = apikeys.create_key(user, "tool")
    assert key_user(plaintext) == user
    # Same public prefix, different secret: found by prefix, refused by the hash comparison.
    assert key_user(plaintext[:-4] + "AAAA") is None
    assert key_user("not-a-key") is None
    user.is_active = False
    user.save()
    assert key_user(plaintext) is None
    user.is_active = True
    user.save()
    apikeys.revoke_key(key)
    assert key_user(plaintext) is None
    assert apikeys.revoke_key(key) is False  # already revoked


def test_key_use_is_noted_but_audited_at_most_hourly(user):
    key, plaintext = apikeys.create_key(user, "tool")
    client = bearer(plaintext)
    for _ in range(3):
        assert client.get("/api/v1/conversations/").status_code == 200
    key.refresh_from_db()
    assert key.last_used_at is not None
    assert AuditEvent.objects.filter(action="api_key_used", user=user).count() == 1
    # An hour later, the next use (after last_used_at is due for an update) is audited again.
    AuditEvent.objects.filter(action="api_key_used").update(at=timezone.now() - timedelta(hours=2))
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now() - timedelta(hours=2))
    client.get("/api/v1/conversations/")
    assert AuditEvent.objects.filter(action="api_key_used", user=user).count() == 2


def test_a_malformed_or_unknown_bearer_header_is_401(db):
    for header in ["Bearer", "Bearer a b", "Bearer rsk_doesnotexist0000000000"]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        response = client.get("/api/v1/collections/")
        assert response.status_code == 401, header
        assert set(response.json()["error"]) == {"code", "message"}


def test_session_authentication_works_for_the_web_ui(user, collection):
    client = APIClient()
    client.force_login(user)
    assert client.get("/api/v1/collections/").json()["count"] == 1


# --- search -------------------------------------------------------------------------------------


def test_search_returns_scored_passages_with_their_sources(user, handbook):
    response = client_for(user).post(
        "/api/v1/search", {"query": "Zephyr budget 2027", "limit": 2}, format="json"
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert 1 <= len(results) <= 2
    best = results[0]
    assert "4.2 million euros" in best["text"]
    assert best["document_id"] == handbook.pk
    assert best["collection_id"] == handbook.collection_id
    assert best["score"] > 0
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert AuditEvent.objects.filter(action="search", via="api", user=user).exists()


def test_search_in_a_collection_narrows_it(user, handbook):
    other = make_collection("Other", everyone=True)
    client = client_for(user)
    response = client.post(
        "/api/v1/search", {"query": "Zephyr budget", "collection": other.pk}, format="json"
    )
    assert response.json() == {"results": []}


def test_search_validates_its_input(user):
    client = client_for(user)
    response = client.post("/api/v1/search", {"query": "", "limit": 0}, format="json")
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"query", "limit"}
    response = client.post("/api/v1/search", "not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    response = client.post("/api/v1/search", "query=x", content_type="text/plain")
    assert response.status_code == 415


# --- ask ----------------------------------------------------------------------------------------


def test_ask_answers_with_citations_and_a_conversation(user, handbook):
    response = client_for(user).post("/api/v1/ask", {"question": QUESTION}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert "4.2 million euros" in body["answer"]
    assert body["outcome"] == "answered"
    assert body["citations"][0]["document_id"] == handbook.pk
    assert "[1]" in body["answer"]
    conversation = Conversation.objects.get(pk=body["conversation"])
    assert conversation.user == user
    assert Message.objects.get(pk=body["message"]).content == body["answer"]


def test_ask_continues_a_conversation(user, handbook):
    client = client_for(user)
    first = client.post("/api/v1/ask", {"question": QUESTION}, format="json").json()
    second = client.post(
        "/api/v1/ask",
        {"question": "And what does it build?", "conversation": first["conversation"]},
        format="json",
    ).json()
    assert second["conversation"] == first["conversation"]
    assert Message.objects.filter(conversation_id=first["conversation"]).count() == 4


def test_ask_in_someone_elses_conversation_is_refused(user, handbook):
    other = User.objects.create_user("other", password="a-long-test-password")
    theirs = Conversation.objects.create(user=other, title="theirs")
    response = client_for(user).post(
        "/api/v1/ask", {"question": QUESTION, "conversation": theirs.pk}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"conversation": ["No such conversation."]}
    assert not theirs.messages.exists()


def test_ask_streams_meta_tokens_citations_then_done(user, handbook):
    response = client_for(user).post(
        "/api/v1/ask", {"question": QUESTION, "stream": True}, format="json"
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    events = sse_events(response)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "meta"
    assert kinds[-2:] == ["citations", "done"]
    assert set(kinds[1:-2]) == {"token"}
    text = "".join(data["text"] for kind, data in events if kind == "token")
    assert "4.2 million euros" in text
    assert events[-2][1]["citations"][0]["document_id"] == handbook.pk
    assert events[-1][1] == {"outcome": "answered"}
    assert Conversation.objects.filter(pk=events[0][1]["conversation"], user=user).exists()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/ask", {"question": QUESTION, "stream": True}),
        (
            "/api/v1/openai/chat/completions",
            {
                "model": "ragsite",
                "stream": True,
                "messages": [{"role": "user", "content": QUESTION}],
            },
        ),
    ],
)
def test_sse_clients_that_accept_only_event_streams_get_one(user, handbook, path, body):
    client = client_for(user)
    response = client.post(path, body, format="json", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    events = b"".join(response.streaming_content)
    assert events.startswith((b"event: meta\n", b"data: {"))
    assert events.endswith(b"\n\n")

    # What is not a stream (here an error) still comes as JSON, not as a 406.
    refused = client.post(
        path, {**body, "collection": 999999}, format="json", HTTP_ACCEPT="text/event-stream"
    )
    assert refused.status_code == 400
    assert refused["Content-Type"] == "application/json"
    assert refused.json()["error"]["fields"] == {"collection": ["No such collection."]}


@pytest.mark.parametrize("stream", [False, True])
def test_a_model_that_is_down_is_503_model_unavailable(user, handbook, stream, refused_port):
    with override_settings(
        RAG_LLM_BASE_URL=f"http://127.0.0.1:{refused_port}/v1",
        RAG_LLM_MODEL="test-model",
        RAG_LLM_CONNECT_TIMEOUT=1.0,
    ):
        response = client_for(user).post(
            "/api/v1/ask", {"question": QUESTION, "stream": stream}, format="json"
        )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"


# --- conversations ------------------------------------------------------------------------------


def test_conversations_list_get_and_delete(user, handbook):
    client = client_for(user)
    asked = client.post("/api/v1/ask", {"question": QUESTION}, format="json").json()
    other = User.objects.create_user("other", password="a-long-test-password")
    Conversation.objects.create(user=other, title="not yours")

    listed = client.get("/api/v1/conversations/").json()
    assert [c["id"] for c in listed["results"]] == [asked["conversation"]]

    detail = client.get(f"/api/v1/conversations/{asked['conversation']}/").json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]
    assert detail["messages"][0]["content"] == QUESTION
    assert detail["messages"][1]["citations"][0]["document_id"] == handbook.pk
    assert "4.2 million" in detail["messages"][1]["citations"][0]["snippet"]

    assert client.delete(f"/api/v1/conversations/{asked['conversation']}/").status_code == 204
    assert not Conversation.objects.filter(pk=asked["conversation"]).exists()


def test_citations_disappear_when_access_to_their_collection_is_lost(user, handbook):
    client = client_for(user)
    asked = client.post("/api/v1/ask", {"question": QUESTION}, format="json").json()
    Collection.objects.filter(pk=handbook.collection_id).update(visibility="restricted")
    detail = client.get(f"/api/v1/conversations/{asked['conversation']}/").json()
    citation = detail["messages"][1]["citations"][0]
    assert citation["document_id"] is None
    assert citation["snippet"] == ""
    assert citation["document_title"] == ""


def test_another_users_conversation_is_not_found(user):
    other = User.objects.create_user("other", password="a-long-test-password")
    theirs = Conversation.objects.create(user=other, title="theirs")
    client = client_for(user)
    assert client.get(f"/api/v1/conversations/{theirs.pk}/").status_code == 404
    assert client.delete(f"/api/v1/conversations/{theirs.pk}/").status_code == 404
    assert Conversation.objects.filter(pk=theirs.pk).exists()


# --- rate limits --------------------------------------------------------------------------------


@override_settings(RAG_API_RATE="2/min")
def test_each_user_has_one_rate_limit_for_all_their_keys(user):
    first, second = client_for(user), client_for(user)
    assert [first.get("/api/v1/conversations/").status_code for _ in range(2)] == [200, 200]
    limited = second.get("/api/v1/conversations/")
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited["Retry-After"]) > 0
    other = User.objects.create_user("other", password="a-long-test-password")
    assert client_for(other).get("/api/v1/conversations/").status_code == 200


@override_settings(RAG_ASK_RATE="1/min")
def test_asking_has_a_smaller_budget_of_its_own(user, handbook):
    client = client_for(user)
    assert client.post("/api/v1/ask", {"question": QUESTION}, format="json").status_code == 200
    assert client.post("/api/v1/ask", {"question": QUESTION}, format="json").status_code == 429
    assert client.get("/api/v1/conversations/").status_code == 200
