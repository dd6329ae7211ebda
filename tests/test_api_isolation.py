"""A key of user A never reveals user B's private collection, through any API endpoint: lists,
details, search, answers, citations, conversations, the OpenAI-compatible endpoint."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from rest_framework.test import APIClient

from core import apikeys
from ingestion.models import Document
from retrieval.models import Conversation
from tests.conftest import make_collection
from tests.documents import write_markdown

pytestmark = pytest.mark.django_db

SECRET = "The Falcon merger will close on 14 March 2027 at a price of 93 euros per share."
PUBLIC = "The Falcon office canteen opens at 8 o'clock every weekday morning."
SECRET_QUESTION = "When will the Falcon merger close and at what price per share?"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()


@pytest.fixture
def world(ingest_file, tmp_path) -> dict:
    """B manages a private collection holding a secret; everyone reads a public one."""
    alice = User.objects.create_user("alice", password="a-long-test-password")
    bob = User.objects.create_user("bob", password="a-long-test-password")
    private = make_collection("Bob's deals", users=[bob])
    private.managers.add(bob)
    public = make_collection("Handbook", everyone=True)
    secret = ingest_file(
        private, write_markdown(tmp_path / "deal.md", "Falcon deal", [("Merger", SECRET)]), bob
    )
    canteen = ingest_file(
        public, write_markdown(tmp_path / "canteen.md", "Falcon canteen", [("Hours", PUBLIC)])
    )
    assert secret.status == canteen.status == Document.Status.READY
    bob_conversation = Conversation.objects.create(user=bob, title="Falcon merger")
    alice_client = APIClient()
    alice_client.credentials(HTTP_AUTHORIZATION=f"Bearer {apikeys.create_key(alice, 'a')[1]}")
    bob_key, _ = apikeys.create_key(bob, "b")
    alice_session = APIClient()  # keys are managed from a signed-in session only (#10)
    alice_session.force_login(alice)
    return {
        "alice": alice_client,
        "alice_session": alice_session,
        "private": private,
        "secret": secret,
        "canteen": canteen,
        "bob_conversation": bob_conversation,
        "bob_key": bob_key,
    }


def assert_no_secret(payload) -> None:
    text = json.dumps(payload) if not isinstance(payload, str) else payload
    assert "93 euros" not in text
    assert "Bob's deals" not in text
    assert "Falcon deal" not in text


def test_lists_do_not_show_the_private_collection_or_its_documents(world):
    client = world["alice"]
    collections = client.get("/api/v1/collections/").json()
    assert [c["name"] for c in collections["results"]] == ["Handbook"]
    documents = client.get("/api/v1/documents/").json()
    assert [d["id"] for d in documents["results"]] == [world["canteen"].pk]
    filtered = client.get(f"/api/v1/documents/?collection={world['private'].pk}").json()
    assert filtered["count"] == 0
    assert_no_secret([collections, documents, filtered])


def test_private_objects_are_404_not_403(world):
    client = world["alice"]
    secret, private = world["secret"], world["private"]
    responses = [
        client.get(f"/api/v1/collections/{private.pk}/"),
        client.get(f"/api/v1/documents/{secret.pk}/"),
        client.delete(f"/api/v1/documents/{secret.pk}/"),
        client.post(f"/api/v1/documents/{secret.pk}/retry/"),
        client.get(f"/api/v1/conversations/{world['bob_conversation'].pk}/"),
        client.delete(f"/api/v1/conversations/{world['bob_conversation'].pk}/"),
        world["alice_session"].get(f"/api/v1/keys/{world['bob_key'].pk}/"),
        world["alice_session"].delete(f"/api/v1/keys/{world['bob_key'].pk}/"),
    ]
    assert [r.status_code for r in responses] == [404] * len(responses)
    assert Document.objects.filter(pk=secret.pk, status="ready").exists()
    assert Conversation.objects.filter(pk=world["bob_conversation"].pk).exists()


def test_search_never_returns_private_passages(world):
    client = world["alice"]
    response = client.post("/api/v1/search", {"query": SECRET_QUESTION}, format="json")
    assert response.status_code == 200
    assert {r["document_id"] for r in response.json()["results"]} <= {world["canteen"].pk}
    assert_no_secret(response.json())
    scoped = client.post(
        "/api/v1/search",
        {"query": SECRET_QUESTION, "collection": world["private"].pk},
        format="json",
    )
    assert scoped.status_code == 400
    assert_no_secret(scoped.json())


def test_answers_and_their_citations_never_use_private_passages(world):
    client = world["alice"]
    answer = client.post("/api/v1/ask", {"question": SECRET_QUESTION}, format="json").json()
    assert {c["document_id"] for c in answer["citations"]} <= {world["canteen"].pk}
    assert_no_secret(answer)
    streamed = client.post(
        "/api/v1/ask", {"question": SECRET_QUESTION, "stream": True}, format="json"
    )
    assert_no_secret(b"".join(streamed.streaming_content).decode())
    scoped = client.post(
        "/api/v1/ask",
        {"question": SECRET_QUESTION, "collection": world["private"].pk},
        format="json",
    )
    assert scoped.status_code == 400

    conversations = client.get("/api/v1/conversations/").json()["results"]
    assert world["bob_conversation"].pk not in {c["id"] for c in conversations}
    for conversation in conversations:
        detail = client.get(f"/api/v1/conversations/{conversation['id']}/").json()
        assert_no_secret(detail)


def test_the_openai_endpoint_never_uses_private_passages(world):
    client = world["alice"]
    completion = client.post(
        "/api/v1/openai/chat/completions",
        {"model": "ragsite", "messages": [{"role": "user", "content": SECRET_QUESTION}]},
        format="json",
    ).json()
    assert {c["document_id"] for c in completion["citations"]} <= {world["canteen"].pk}
    assert_no_secret(completion)
    streamed = client.post(
        "/api/v1/openai/chat/completions",
        {
            "model": "ragsite",
            "stream": True,
            "messages": [{"role": "user", "content": SECRET_QUESTION}],
        },
        format="json",
    )
    assert_no_secret(b"".join(streamed.streaming_content).decode())
    continued = client.post(
        "/api/v1/openai/chat/completions",
        {
            "model": "ragsite",
            "conversation": world["bob_conversation"].pk,
            "messages": [{"role": "user", "content": SECRET_QUESTION}],
        },
        format="json",
    )
    assert continued.status_code == 400
    assert not world["bob_conversation"].messages.exists()


def test_the_owner_still_sees_everything(world, django_user_model):
    bob = django_user_model.objects.get(username="bob")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {apikeys.create_key(bob, 'again')[1]}")
    assert client.get(f"/api/v1/documents/{world['secret'].pk}/").status_code == 200
    answer = client.post("/api/v1/ask", {"question": SECRET_QUESTION}, format="json").json()
    assert world["secret"].pk in {c["document_id"] for c in answer["citations"]}
    assert "93 euros" in answer["answer"]
