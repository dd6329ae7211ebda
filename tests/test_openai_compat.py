"""The official openai Python SDK, pointed at a live test server, gets grounded completions
(plain and streamed) from /api/v1/openai, with citations in the documented extra fields."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from django.contrib.auth.models import User
from django.core.cache import cache

from core import apikeys
from retrieval.models import Conversation, Message
from retrieval.serializers import MAX_CHAT_MESSAGES
from tests.conftest import make_collection
from tests.documents import FACT, write_markdown

QUESTION = "What is the Zephyr project budget for 2027?"


@pytest.fixture
def served(transactional_db, live_server, ingest_file, tmp_path) -> dict:
    cache.clear()
    user = User.objects.create_user("tooling", password="a-long-test-password")
    collection = make_collection("Handbook", everyone=True)
    document = ingest_file(
        collection,
        write_markdown(
            tmp_path / "zephyr.md",
            "Zephyr report",
            [("Introduction", "The Zephyr project builds wind turbines."), ("Budget", FACT)],
        ),
    )
    _, key = apikeys.create_key(user, "sdk")
    base_url = f"{live_server.url}/api/v1/openai"
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)
    return {"client": client, "user": user, "document": document, "key": key, "url": base_url}


def test_the_sdk_lists_the_model(served):
    models = served["client"].models.list()
    assert [m.id for m in models.data] == ["ragsite"]
    assert served["client"].models.retrieve("ragsite").owned_by == "ragsite"


def test_the_sdk_gets_a_grounded_completion_with_citations(served):
    completion = served["client"].chat.completions.create(
        model="ragsite", messages=[{"role": "user", "content": QUESTION}]
    )
    assert completion.object == "chat.completion"
    assert completion.model == "ragsite"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert "4.2 million euros" in choice.message.content
    extra = completion.model_extra
    assert extra["citations"][0]["document_id"] == served["document"].pk
    assert extra["outcome"] == "answered"
    conversation = Conversation.objects.get(pk=extra["conversation_id"])
    assert conversation.user == served["user"]


def test_the_sdk_streams_role_then_content_then_stop_with_citations(served):
    stream = served["client"].chat.completions.create(
        model="ragsite", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    middle = chunks[1:-1]
    assert middle
    assert all(c.choices[0].finish_reason is None for c in middle)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "4.2 million euros" in text
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.choices[0].delta.content is None
    assert last.model_extra["citations"][0]["document_id"] == served["document"].pk


def test_the_raw_stream_ends_with_done(served):
    response = httpx.post(
        f"{served['url']}/chat/completions",
        headers={"Authorization": f"Bearer {served['key']}"},
        json={
            "model": "ragsite",
            "stream": True,
            "messages": [{"role": "user", "content": QUESTION}],
        },
        timeout=60,
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = response.text.strip().split("\n\n")
    assert all(block.startswith("data: ") for block in blocks)
    assert blocks[-1] == "data: [DONE]"
    first = json.loads(blocks[0].removeprefix("data: "))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_earlier_messages_become_the_conversation_history(served):
    completion = served["client"].chat.completions.create(
        model="ragsite",
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What does the Zephyr project build?"},
            {"role": "assistant", "content": "It builds wind turbines."},
            {"role": "user", "content": [{"type": "text", "text": "And what is its budget?"}]},
        ],
    )
    conversation_id = completion.model_extra["conversation_id"]
    roles = list(
        Message.objects.filter(conversation_id=conversation_id).values_list("role", "content")
    )
    assert roles[:3] == [
        ("user", "What does the Zephyr project build?"),
        ("assistant", "It builds wind turbines."),
        ("user", "And what is its budget?"),
    ]
    assert "4.2 million euros" in completion.choices[0].message.content


def test_sdk_errors_map_to_the_sdk_exceptions(served):
    bad_key = openai.OpenAI(
        base_url=served["url"], api_key="rsk_wrongwrongwrongwrong", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        bad_key.models.list()
    with pytest.raises(openai.NotFoundError) as missing:
        served["client"].chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": QUESTION}]
        )
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        served["client"].chat.completions.create(
            model="ragsite", messages=[{"role": "assistant", "content": "no question"}]
        )


def stored(conversation_id: int) -> list[tuple[str, str]]:
    return list(
        Message.objects.filter(conversation_id=conversation_id)
        .order_by("created_at", "id")
        .values_list("role", "content")
    )


def test_an_earlier_message_too_long_for_the_history_is_left_out_with_all_before_it(served):
    # The live reproduction: 150,000 spaces in an earlier message used to be stored and run
    # through a quadratic regex while the prompt was built, freezing the process for seconds.
    huge = "Zephyr" + " " * 150_000 + "turbines?"
    completion = served["client"].chat.completions.create(
        model="ragsite",
        messages=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hello! Ask about your documents."},
            {"role": "user", "content": huge},
            {"role": "assistant", "content": "It builds wind turbines."},
            {"role": "user", "content": QUESTION},
        ],
    )
    assert "4.2 million euros" in completion.choices[0].message.content
    assert stored(completion.model_extra["conversation_id"])[:2] == [
        ("assistant", "It builds wind turbines."),
        ("user", QUESTION),
    ]


def test_a_long_conversation_keeps_its_newest_messages_within_the_bounds(served, settings):
    settings.RAG_API_HISTORY_MESSAGES = 4
    history = []
    for turn in range(10):
        history += [
            {"role": "user", "content": f"Question {turn}?"},
            {"role": "assistant", "content": f"Answer {turn}."},
        ]
    completion = served["client"].chat.completions.create(
        model="ragsite", messages=[*history, {"role": "user", "content": QUESTION}]
    )
    assert stored(completion.model_extra["conversation_id"])[:5] == [
        ("user", "Question 8?"),
        ("assistant", "Answer 8."),
        ("user", "Question 9?"),
        ("assistant", "Answer 9."),
        ("user", QUESTION),
    ]

    settings.RAG_API_HISTORY_CHARS = len("Answer 9.") + len("Question 9?")
    completion = served["client"].chat.completions.create(
        model="ragsite", messages=[*history, {"role": "user", "content": QUESTION}]
    )
    assert stored(completion.model_extra["conversation_id"])[:3] == [
        ("user", "Question 9?"),
        ("assistant", "Answer 9."),
        ("user", QUESTION),
    ]


def test_more_messages_than_any_chat_has_is_refused_before_reading_them(served):
    messages = [{"role": "user", "content": "Hi"}] * (MAX_CHAT_MESSAGES + 1)
    with pytest.raises(openai.BadRequestError) as refused:
        served["client"].chat.completions.create(model="ragsite", messages=messages)
    assert f"no more than {MAX_CHAT_MESSAGES} elements" in json.dumps(refused.value.body)
    assert not Conversation.objects.exists()
