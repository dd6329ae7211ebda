"""Several replicas of the model behind RAG_LLM_BASE_URL (a comma-separated list): requests take
turns, one that fails before the first token hands the request to the next and sits out a
cool-down, and every replica answers to the egress rules like a single URL does."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from retrieval import llm
from retrieval.answering import answer
from retrieval.models import Message
from tests.fakes.openai_server import MODEL_ID, FakeOpenAIServer

MESSAGES = [
    {"role": "system", "content": "Answer from the passages."},
    {"role": "user", "content": "<passages>\n</passages>\n\nQuestion: Why?"},
]
DEEP_COPY = "How do I make a deep copy of a nested list?"


@pytest.fixture
def replicas(settings, monkeypatch) -> Iterator[tuple[FakeOpenAIServer, FakeOpenAIServer]]:
    """Two running fake vLLM servers; RAG_LLM_BASE_URL lists both (with the spaces people type).
    No cool-down left over from an earlier test whose server had the same port."""
    monkeypatch.setattr(llm, "_down_until", {}, raising=False)
    first = FakeOpenAIServer(answer="First replica: use copy.deepcopy [1].").start()
    second = FakeOpenAIServer(answer="Second replica: use copy.deepcopy [1].").start()
    settings.RAG_LLM_BASE_URL = f"{first.base_url} , {second.base_url}"
    settings.RAG_LLM_MODEL = MODEL_ID
    settings.RAG_LLM_API_KEY = ""
    settings.RAG_LLM_TIMEOUT = 5.0
    settings.RAG_LLM_CONNECT_TIMEOUT = 2.0
    yield first, second
    first.stop()
    second.stop()


def ask() -> str:
    return "".join(llm.get_generator().stream(MESSAGES, []))


def refused_url(held: socket.socket) -> str:
    """The base URL of a port bound but not listening: connecting to it is refused."""
    held.bind(("127.0.0.1", 0))
    return f"http://127.0.0.1:{held.getsockname()[1]}/v1"


def test_requests_take_turns_over_the_replicas(replicas):
    first, second = replicas

    answers = [ask() for _ in range(6)]

    assert len(first.chat_requests) == len(second.chat_requests) == 3
    assert answers.count(first.answer) == answers.count(second.answer) == 3


def test_without_a_configured_model_each_replica_is_asked_which_it_serves(replicas, settings):
    first, second = replicas
    settings.RAG_LLM_MODEL = ""
    first.models, second.models = ["model-a"], ["model-b"]

    for _ in range(4):
        ask()

    assert {r.body["model"] for r in first.chat_requests} == {"model-a"}
    assert {r.body["model"] for r in second.chat_requests} == {"model-b"}


@pytest.mark.django_db
def test_a_replica_killed_mid_test_leaves_the_answers_to_the_other(dev_corpus, user, replicas):
    first, second = replicas
    before = [answer(user, DEEP_COPY) for _ in range(2)]
    assert {r.outcome for r in before} == {Message.Outcome.ANSWERED}
    assert len(first.chat_requests) == len(second.chat_requests) == 1

    first.stop()  # connection refused from now on
    after = [answer(user, DEEP_COPY) for _ in range(4)]

    assert {r.outcome for r in after} == {Message.Outcome.ANSWERED}
    assert all(r.text.startswith("Second replica") for r in after)
    assert len(first.chat_requests) == 1
    assert len(second.chat_requests) == 5


def test_a_replica_that_failed_sits_out_its_cool_down(replicas, monkeypatch):
    monkeypatch.setattr(llm, "REPLICA_COOL_DOWN_S", 3.0, raising=False)
    first, second = replicas
    first.failure = "500"

    answers = [ask() for _ in range(4)]

    assert answers == [second.answer] * 4  # the 500 was never seen by the reader
    assert len(first.chat_requests) == 1  # asked once, then skipped
    first.failure = None
    time.sleep(3.1)
    answers = [ask() for _ in range(4)]
    assert answers.count(first.answer) == 2  # back in turn after its cool-down


def test_a_replica_that_times_out_before_the_first_token_hands_over(replicas, settings):
    settings.RAG_LLM_TIMEOUT = 0.5
    first, second = replicas
    first.failure = "hang"

    answers = [ask() for _ in range(2)]

    assert answers == [second.answer] * 2
    assert len(first.chat_requests) == 1


def test_a_replica_that_breaks_off_after_tokens_is_not_retried_elsewhere(replicas):
    first, second = replicas
    first.answer = "A fairly long answer that will be cut off halfway through [1]."
    first.failure = "close_mid_stream"
    outcomes = []

    for _ in range(2):  # one of the two starts at the first replica
        received: list[str] = []
        try:
            for piece in llm.get_generator().stream(MESSAGES, []):
                received.append(piece)
            outcomes.append("answered")
        except llm.ModelUnavailable:
            assert received, "pieces came before the break"
            outcomes.append("broken off")

    assert sorted(outcomes) == ["answered", "broken off"]
    assert len(first.chat_requests) == len(second.chat_requests) == 1


@pytest.mark.django_db
def test_with_every_replica_down_the_answer_says_the_model_is_unavailable(
    dev_corpus, user, settings
):
    with socket.socket() as one, socket.socket() as two:
        settings.RAG_LLM_BASE_URL = f"{refused_url(one)},{refused_url(two)}"
        settings.RAG_LLM_MODEL = "any"

        results = [answer(user, DEEP_COPY) for _ in range(2)]

    assert {r.outcome for r in results} == {Message.Outcome.MODEL_UNAVAILABLE}
    assert {r.text for r in results} == {llm.UNAVAILABLE_MESSAGE}


def test_a_replica_outside_the_egress_rules_refuses_the_whole_configuration(replicas, settings):
    first, _ = replicas
    settings.RAG_ALLOWED_HOSTS_EGRESS = []
    settings.RAG_LLM_BASE_URL = f"{first.base_url},https://api.openai.com/v1"

    with pytest.raises(llm.LLMConfigurationError, match=r"api\.openai\.com"):
        llm.get_generator()
    with pytest.raises(CommandError, match=r"api\.openai\.com"):
        call_command("privacy_check", stdout=StringIO())
    assert first.requests == []


def test_privacy_check_lists_every_replica(settings):
    settings.RAG_ALLOWED_HOSTS_EGRESS = ["gpu1.internal", "gpu2.internal"]
    settings.RAG_LLM_BASE_URL = "http://gpu1.internal:8000/v1, http://gpu2.internal:8000/v1"
    out = StringIO()

    call_command("privacy_check", stdout=out)

    lines = [line for line in out.getvalue().splitlines() if "LLM endpoint" in line]
    assert len(lines) == 2
    assert "http://gpu1.internal:8000/v1 (loopback" in lines[0]
    assert "http://gpu2.internal:8000/v1 (loopback" in lines[1]


@pytest.mark.django_db
def test_readyz_is_ready_while_one_replica_answers_and_reports_each(replicas, settings):
    first, second = replicas
    first.failure = "500"

    body = Client().get("/readyz").json()

    assert body["failed"] == []
    assert body["checks"]["llm"]["ok"] is True
    replicas_seen = body["checks"]["llm"]["replicas"]
    assert replicas_seen["1"]["ok"] is False
    assert replicas_seen["1"]["error"] == "answered HTTP 500"
    assert replicas_seen["2"]["ok"] is True
    assert [r.path for r in second.requests] == ["/v1/models"]

    second.failure = "500"
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["llm"]["error"].startswith("no replica answers")


@pytest.mark.django_db
def test_readyz_sends_nothing_to_a_replica_the_egress_rules_refuse(replicas, settings):
    first, _ = replicas
    settings.RAG_ALLOWED_HOSTS_EGRESS = []
    settings.RAG_LLM_BASE_URL = f"http://llm.example.com/v1,{first.base_url}"

    body = Client().get("/readyz").json()

    assert body["checks"]["llm"]["ok"] is True
    assert "egress" in body["checks"]["llm"]["replicas"]["1"]["error"]
    assert body["checks"]["llm"]["replicas"]["2"]["ok"] is True
