"""The LLM client against a fake vLLM server over real HTTP, and the endpoint allow-list."""

from __future__ import annotations

import logging
import socket

import pytest

from retrieval import extractive, llm
from retrieval.search import Passage
from tests.fakes.openai_server import MODEL_ID

MESSAGES = [
    {"role": "system", "content": "Answer from the passages."},
    {"role": "user", "content": "<passages>\n</passages>\n\nQuestion: Why?"},
]


def passage(text: str, number: int = 1) -> Passage:
    return Passage(number, 100 + number, 1, "Guide", text, "Intro", None, None, 0.03, 1, 1, 0.7)


def test_streams_the_answer_piece_by_piece_over_sse(fake_llm):
    fake_llm.answer = "Use copy.deepcopy() for nested lists [1]."
    generator = llm.get_generator()

    pieces = list(generator.stream(MESSAGES, [passage("x")]))

    assert "".join(pieces) == fake_llm.answer
    assert len(pieces) > 3  # streamed, not one blob
    [request] = fake_llm.chat_requests
    assert request.body["stream"] is True
    assert request.body["model"] == MODEL_ID
    assert request.body["messages"] == MESSAGES
    assert generator.name == f"openai:{MODEL_ID}"


def test_sends_answer_limits_from_settings_and_the_api_key(fake_llm, settings):
    settings.RAG_LLM_API_KEY = "s3cret"
    settings.RAG_LLM_MAX_ANSWER_TOKENS = 123
    settings.RAG_LLM_REASONING_TOKENS = 0  # a model that does not think
    settings.RAG_LLM_TEMPERATURE = 0.0

    list(llm.get_generator().stream(MESSAGES, []))

    [request] = fake_llm.chat_requests
    assert request.body["max_tokens"] == 123
    assert request.body["temperature"] == 0.0
    assert request.headers["Authorization"] == "Bearer s3cret"


def test_without_a_configured_model_asks_the_server_once_which_it_serves(fake_llm, settings):
    settings.RAG_LLM_MODEL = ""
    fake_llm.models = ["served-model", "other"]

    list(llm.get_generator().stream(MESSAGES, []))
    list(llm.get_generator().stream(MESSAGES, []))

    assert [r.path for r in fake_llm.requests].count("/v1/models") == 1
    assert {r.body["model"] for r in fake_llm.chat_requests} == {"served-model"}


def test_non_streaming_completion(fake_llm):
    fake_llm.answer = "standalone query"
    assert llm.get_generator().complete(MESSAGES) == "standalone query"
    assert fake_llm.chat_requests[0].body["stream"] is False


def test_a_server_error_is_reported_as_model_unavailable_without_retrying(fake_llm):
    fake_llm.failure = "500"

    with pytest.raises(llm.ModelUnavailable) as raised:
        list(llm.get_generator().stream(MESSAGES, []))

    assert str(raised.value) == "The model is unavailable right now."
    assert "500" in raised.value.detail  # the detail is for the logs
    assert len(fake_llm.chat_requests) == 1


def test_a_hanging_server_times_out_as_model_unavailable(fake_llm, settings):
    settings.RAG_LLM_TIMEOUT = 0.5
    fake_llm.failure = "hang"

    with pytest.raises(llm.ModelUnavailable) as raised:
        list(llm.get_generator().stream(MESSAGES, []))

    assert "ReadTimeout" in raised.value.detail  # the timeout ended it, not the server
    assert len(fake_llm.chat_requests) == 1  # a read timeout is not retried: it may be working


def test_a_connection_dropped_mid_answer_fails_after_the_pieces_already_sent(fake_llm):
    fake_llm.answer = "A fairly long answer that will be cut off halfway through [1]."
    fake_llm.failure = "close_mid_stream"
    received = []

    # The loop is the one action under test: the pieces before the break must be kept.
    with pytest.raises(llm.ModelUnavailable):  # noqa: PT012
        for piece in llm.get_generator().stream(MESSAGES, []):
            received.append(piece)

    assert received, "pieces before the break reach the caller"
    assert "".join(received) != fake_llm.answer
    assert len(fake_llm.chat_requests) == 1  # never retried once tokens were received


def test_a_stream_that_ends_without_done_is_an_error(fake_llm):
    fake_llm.failure = "no_done"
    with pytest.raises(llm.ModelUnavailable):
        list(llm.get_generator().stream(MESSAGES, []))


def test_a_server_that_is_down_is_model_unavailable_after_quick_retries(settings, caplog):
    # A port held bound but not listening: connecting is refused, and no other process can
    # start listening on it while the test holds it (a probe closed first could be reused).
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        settings.RAG_LLM_BASE_URL = f"http://127.0.0.1:{port}/v1"
        settings.RAG_LLM_MODEL = "any"
        caplog.set_level(logging.DEBUG, logger="httpcore.connection")

        with pytest.raises(llm.ModelUnavailable) as raised:
            list(llm.get_generator().stream(MESSAGES, []))

    # httpcore's own trace of each connection attempt: the first, then two retries.
    attempts = [r for r in caplog.records if r.getMessage().startswith("connect_tcp.started")]
    assert len(attempts) == 3
    assert "ConnectError" in raised.value.detail


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8000/v1", True),
        ("http://localhost:8000/v1", True),
        ("http://[::1]:8000/v1", True),
        ("https://gpu-box.internal:8000/v1", True),  # listed below
        ("http://GPU-BOX.internal/v1", True),
        ("http://10.0.0.7:8000/v1", False),
        ("https://api.openai.com/v1", False),
        ("ftp://127.0.0.1/v1", False),
        ("not a url", False),
    ],
)
def test_endpoints_must_be_loopback_or_allow_listed(settings, url, allowed):
    settings.RAG_ALLOWED_HOSTS_EGRESS = ["gpu-box.internal"]
    assert llm.is_allowed_endpoint(url) is allowed


def test_a_base_url_outside_the_allow_list_is_refused_before_any_connection(settings):
    settings.RAG_LLM_BASE_URL = "https://api.openai.com/v1"
    settings.RAG_ALLOWED_HOSTS_EGRESS = []

    with pytest.raises(llm.LLMConfigurationError, match="RAG_ALLOWED_HOSTS_EGRESS"):
        llm.get_generator()


def test_without_a_base_url_the_extractive_answerer_is_used(settings):
    settings.RAG_LLM_BASE_URL = ""
    assert isinstance(llm.get_generator(), extractive.ExtractiveGenerator)


def test_extractive_answer_quotes_the_best_sentences_with_their_markers():
    passages = [
        passage("The office opens at nine. Parking is free for staff on weekdays.", 1),
        passage(
            "copy.copy(x)\n- Return a shallow copy of x.\ncopy.deepcopy(x[, memo])\n"
            "- Return a deep copy of x.\nThe module does not copy sockets.",
            2,
        ),
    ]
    pieces = list(
        extractive.ExtractiveGenerator().stream(
            [], passages, query="How do I make a deep copy of a list?"
        )
    )
    text = "".join(pieces)

    assert len(pieces) > 3
    assert text.startswith("copy.deepcopy(x[, memo]) — Return a deep copy of x. [2]")
    assert "Parking" not in text


def test_sentences_keep_definition_list_entries_together():
    units = extractive.split_sentences(
        "Interface summary:\ncopy.deepcopy(x[, memo])\n- Return a deep copy of x.\n"
        "First sentence here. Second sentence there."
    )
    assert "copy.deepcopy(x[, memo]) — Return a deep copy of x." in units
    assert "First sentence here." in units
    assert "Second sentence there." in units
