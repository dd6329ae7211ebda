"""Old answers after losing access (#11): an answer may copy a cited passage word for word, so once
its reader can no longer read a cited document the answer's text is withheld too. The web page,
its message fragment and the API show a short notice instead, and the text never goes back into
a prompt as history (the OpenAI-compatible endpoint's `conversation` continuation)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from core import apikeys
from ingestion.models import Collection
from retrieval.models import Message
from tests.conftest import make_collection
from tests.documents import write_text
from tests.fakes.openai_server import fake_llm  # noqa: F401  (fixture)

# Written here, not imported: the notice the README promises.
NOTICE = "This answer quoted documents you can no longer access."
FACT = "Wombats dig their burrows with strong front claws and flat nails."
QUOTED = "strong front claws"  # a phrase of FACT the extractive answer copies
QUESTION = "How do wombats dig their burrows?"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()


@pytest.fixture
def wombats(db, ingest_file, tmp_path) -> Collection:
    """An everyone-readable collection whose one document states FACT."""
    collection = make_collection("Marsupials", everyone=True)
    ingest_file(collection, write_text(tmp_path / "wombats.txt", FACT))
    return collection


def _lose_access(collection: Collection) -> None:
    collection.visibility = Collection.Visibility.RESTRICTED
    collection.save()


def _api(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {apikeys.create_key(user, 'tests')[1]}")
    return client


def test_the_web_page_and_fragment_show_a_notice_instead_of_the_quoting_answer(
    settings, user, wombats
):
    settings.RAG_LLM_BASE_URL = ""  # the extractive answerer: it quotes the passage
    client = Client()
    client.force_login(user)
    client.post(reverse("web:ask"), {"question": QUESTION})  # without script: the whole answer
    reply = Message.objects.get(conversation__user=user, role="assistant")
    assert QUOTED in reply.content, "the stored answer quotes the document"
    page_url = reverse("web:conversation", args=[reply.conversation_id])
    fragment_url = reverse("web:message", args=[reply.pk])
    assert QUOTED in client.get(page_url).content.decode()  # readable: shown as written
    assert QUOTED in client.get(fragment_url).content.decode()

    _lose_access(wombats)

    page = client.get(page_url).content.decode()
    fragment = client.get(fragment_url).content.decode()
    for html in (page, fragment):
        assert QUOTED not in html
        assert NOTICE in html
    assert QUESTION in page, "the reader's own question stays"
    assert "This source is no longer available to you." in page
    reply.refresh_from_db()
    assert QUOTED in reply.content, "withheld when shown, not erased: access may come back"
    wombats.visibility = Collection.Visibility.EVERYONE
    wombats.save()
    assert QUOTED in client.get(page_url).content.decode()


def test_the_api_conversation_shows_a_notice_instead_of_the_quoting_answer(settings, user, wombats):
    settings.RAG_LLM_BASE_URL = ""
    client = _api(user)
    asked = client.post("/api/v1/ask", {"question": QUESTION}, format="json").json()
    assert QUOTED in asked["answer"]
    detail_url = f"/api/v1/conversations/{asked['conversation']}/"
    before = client.get(detail_url).json()["messages"]
    assert QUOTED in before[1]["content"]

    _lose_access(wombats)

    response = client.get(detail_url)
    assert response.status_code == 200
    question, reply = response.json()["messages"]
    assert question == {**question, "role": "user", "content": QUESTION}
    assert reply["role"] == "assistant"
    assert reply["content"] == NOTICE
    assert reply["citations"]
    assert all(c["document_id"] is None for c in reply["citations"])
    assert QUOTED not in response.content.decode()
    assert "front claws" not in response.content.decode()


def test_a_withheld_answer_never_reaches_the_model_as_history(
    user,
    wombats,
    fake_llm,  # noqa: F811
    ingest_file,
    tmp_path,
):
    """Continuing the conversation through the OpenAI-compatible endpoint: the model gets the
    earlier question, but not the answer that quoted a document the reader lost."""
    fake_llm.answer = f"{FACT} [1]"
    client = _api(user)
    first = client.post(
        "/api/v1/openai/chat/completions",
        {"model": "ragsite", "messages": [{"role": "user", "content": QUESTION}]},
        format="json",
    ).json()
    assert QUOTED in first["choices"][0]["message"]["content"]
    # A follow-up answerable from another, still readable collection, so the model is asked.
    monotremes = make_collection("Monotremes", everyone=True)
    ingest_file(
        monotremes,
        write_text(tmp_path / "echidnas.txt", "Echidnas dig burrows with their short limbs."),
    )
    _lose_access(wombats)
    fake_llm.answer = "Echidnas dig with their short limbs [1]."
    before = len(fake_llm.chat_requests)

    follow_up = client.post(
        "/api/v1/openai/chat/completions",
        {
            "model": "ragsite",
            "conversation": first["conversation_id"],
            "messages": [{"role": "user", "content": "How do echidnas dig burrows?"}],
        },
        format="json",
    )

    assert follow_up.status_code == 200
    assert follow_up.json()["conversation_id"] == first["conversation_id"]
    [request] = fake_llm.chat_requests[before:]
    sent = "\n".join(str(m["content"]) for m in request.messages)
    assert QUESTION in sent, "the earlier question is still history"
    assert "front claws" not in sent
    assert "Wombats dig" not in sent
