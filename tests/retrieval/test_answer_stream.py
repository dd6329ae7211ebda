"""The outputs of the answer stream, each for a fixed sequence of typed events: the chat page's
events, the API's events and collected answer, OpenAI's chunks. The views that pick them are
tested end to end in test_views, test_api and test_openai_compat."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator

import pytest
from django.core.handlers.asgi import ASGIRequest
from django.test import RequestFactory

from core.api_errors import ModelUnavailable
from retrieval.answer_events import (
    AnswerEvent,
    Citations,
    CitationView,
    CollectedAnswer,
    Done,
    Error,
    Meta,
    Thinking,
    Token,
    collect,
)
from retrieval.answer_stream import (
    ThreadedStream,
    api_sse,
    collect_for_api,
    fail_fast,
    openai_chunks,
    sse,
    stream_body,
    web_sse,
)

CITATION = CitationView(
    number=1,
    document_id=3,
    chunk_id=5,
    document_title="Handbuch für Tee",
    page=2,
    heading="Ziehzeit",
    snippet="Grüner Tee zieht 2 Minuten.",
)
UNAVAILABLE = "The model is unavailable right now."
BASE = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "ragsite"}


def answered() -> list[AnswerEvent]:
    return [
        Meta(conversation_id=7, message_id=42),
        Thinking(),
        Token("Grüße, "),
        Token("naïve ✓ [1]"),  # "[1]" could open a link: the API's sanitiser holds it back
        Citations([CITATION]),
        Done("answered"),
    ]


def failed_midway() -> list[AnswerEvent]:
    return [Meta(7, 42), Token("Halb ["), Error(UNAVAILABLE, "model_unavailable")]


class Stream:
    """An answer stream that notes whether it was closed (the answer saves itself then)."""

    def __init__(self, events: list[AnswerEvent]):
        self._events = iter(events)
        self.closed = False

    def __iter__(self) -> Iterator[AnswerEvent]:
        return self

    def __next__(self) -> AnswerEvent:
        return next(self._events)

    def close(self) -> None:
        self.closed = True


def frames(chunks: Iterator[bytes]) -> list[bytes]:
    return list(chunks)


# --- the framer ------------------------------------------------------------------------------
def test_an_event_is_one_data_line_of_utf8_json():
    frame = sse("token", {"text": "Grüße\n\u2028✓\x85"})

    assert frame == 'event: token\ndata: {"text": "Grüße\\n\\u2028✓\\u0085"}\n\n'.encode()
    _head, data, end = frame.decode().split("\n", 2)
    assert end == "\n"
    assert len(data.splitlines()) == 1
    assert json.loads(data.removeprefix("data: ")) == {"text": "Grüße\n\u2028✓\x85"}


def test_an_event_without_a_name_is_a_plain_message():
    assert sse(None, {"a": "é"}) == 'data: {"a": "é"}\n\n'.encode()


# --- collected -------------------------------------------------------------------------------
def test_collect_gathers_the_whole_answer():
    stream = Stream(answered())

    assert collect(stream) == CollectedAnswer(
        "Grüße, naïve ✓ [1]", [CITATION], conversation_id=7, message_id=42, outcome="answered"
    )
    assert stream.closed


def test_a_failed_answer_collects_to_its_message_and_outcome():
    answer = collect(failed_midway())

    assert (answer.text, answer.outcome) == (UNAVAILABLE, "model_unavailable")
    assert answer.error == Error(UNAVAILABLE, "model_unavailable")


def test_the_api_collects_a_sanitised_answer_or_raises_its_503():
    events: list[AnswerEvent] = [Meta(1, 2), Token("Hi ![x](http://evil.example/a.png)"), Done("x")]
    assert collect_for_api(events).text == "Hi "

    with pytest.raises(ModelUnavailable) as raised:
        collect_for_api(failed_midway())
    assert raised.value.status_code == 503
    assert str(raised.value.detail) == UNAVAILABLE


# --- the chat page ---------------------------------------------------------------------------
def test_the_web_stream_names_sources_and_the_fragment_to_swap_in():
    stream = Stream(answered())

    assert frames(web_sse(stream)) == [
        b'event: meta\ndata: {"conversation_id": 7, "message_id": 42}\n\n',
        'event: token\ndata: {"text": "Grüße, "}\n\n'.encode(),
        'event: token\ndata: {"text": "naïve ✓ [1]"}\n\n'.encode(),
        'event: citations\ndata: {"citations": [{"number": 1, "title": "Handbuch für Tee", '
        '"page": 2, "url": "/m/42/sources/1/"}]}\n\n'.encode(),
        b'event: done\ndata: {"outcome": "answered", "fragment_url": "/m/42/"}\n\n',
    ]
    assert stream.closed


def test_the_web_stream_ends_a_failed_answer_with_its_message():
    assert frames(web_sse(iter(failed_midway())))[1:] == [
        b'event: token\ndata: {"text": "Halb ["}\n\n',  # the page shows text nodes: no sanitiser
        b'event: error\ndata: {"message": "The model is unavailable right now.", '
        b'"outcome": "model_unavailable", "fragment_url": "/m/42/"}\n\n',
    ]


def test_the_web_stream_reports_its_own_failure_as_an_event():
    def breaking() -> Iterator[AnswerEvent]:
        yield Meta(7, 42)
        raise RuntimeError("a bug")

    assert frames(web_sse(breaking()))[-1] == (
        b'event: error\ndata: {"message": "Something went wrong while answering. Try again."}\n\n'
    )


# --- the API's events ------------------------------------------------------------------------
def test_the_api_stream_sanitises_text_and_sends_citations_in_full():
    stream = Stream(answered())

    assert frames(api_sse(stream)) == [
        b'event: meta\ndata: {"conversation": 7, "message": 42}\n\n',
        'event: token\ndata: {"text": "Grüße, "}\n\n'.encode(),
        'event: token\ndata: {"text": "naïve ✓ "}\n\n'.encode(),
        b'event: token\ndata: {"text": "[1]"}\n\n',  # held back, then let go as the text ends
        'event: citations\ndata: {"citations": [{"number": 1, "document_id": 3, "chunk_id": 5, '
        '"document_title": "Handbuch für Tee", "page": 2, "heading": "Ziehzeit", '
        '"snippet": "Grüner Tee zieht 2 Minuten."}]}\n\n'.encode(),
        b'event: done\ndata: {"outcome": "answered"}\n\n',
    ]
    assert stream.closed


def test_the_api_stream_ends_a_failed_answer_with_its_code():
    assert frames(api_sse(iter(failed_midway())))[1:] == [
        b'event: token\ndata: {"text": "Halb "}\n\n',
        b'event: token\ndata: {"text": "["}\n\n',
        b'event: error\ndata: {"code": "model_unavailable", '
        b'"message": "The model is unavailable right now."}\n\n',
    ]


def test_a_client_that_leaves_closes_the_answer():
    stream = Stream(answered())
    chunks = api_sse(stream)
    next(chunks)

    chunks.close()

    assert stream.closed


def test_a_failure_before_the_first_token_is_raised_before_any_byte():
    stream = Stream(failed_midway()[::2])  # meta, error

    with pytest.raises(ModelUnavailable):
        fail_fast(stream)
    assert stream.closed


def test_the_first_events_are_read_ahead_and_replayed():
    stream = Stream(answered())

    events = fail_fast(stream)

    assert next(stream) == Token("Grüße, ")  # fail_fast read meta and thinking only
    assert list(events) == [Meta(7, 42), Thinking(), *answered()[3:]]
    events.close()
    assert stream.closed


# --- OpenAI's chunks -------------------------------------------------------------------------
def _chunks(events: list[AnswerEvent]) -> list[dict | str]:
    out: list[dict | str] = []
    for frame in openai_chunks(BASE, iter(events)):
        text = frame.decode()
        assert text.startswith("data: ")
        assert text.endswith("\n\n")
        assert text.count("\n") == 2
        data = text.removeprefix("data: ").strip()
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def delta(content: dict, finish_reason: str | None = None, **extra) -> dict:
    choice = {"index": 0, "delta": content, "logprobs": None, "finish_reason": finish_reason}
    return {**BASE, "choices": [choice], **extra}


def test_openai_chunks_carry_role_content_and_a_stop_with_citations():
    citation = {
        "number": 1,
        "document_id": 3,
        "chunk_id": 5,
        "document_title": "Handbuch für Tee",
        "page": 2,
        "heading": "Ziehzeit",
        "snippet": "Grüner Tee zieht 2 Minuten.",
    }
    assert _chunks(answered()) == [
        delta({"role": "assistant", "content": ""}),
        delta({"content": "Grüße, "}),
        delta({"content": "naïve ✓ "}),
        delta({"content": "[1]"}),
        delta({}, "stop", citations=[citation], conversation_id=7, outcome="answered"),
        "[DONE]",
    ]
    assert "Grüße".encode() in b"".join(openai_chunks(BASE, iter(answered())))  # not \u-escaped


def test_openai_chunks_end_a_failed_answer_with_an_error_object():
    assert _chunks(failed_midway()) == [
        delta({"role": "assistant", "content": ""}),
        delta({"content": "Halb "}),
        delta({"content": "["}),
        {"error": {"message": UNAVAILABLE, "type": "api_error", "code": "model_unavailable"}},
        "[DONE]",
    ]


# --- under ASGI ------------------------------------------------------------------------------
def test_under_wsgi_the_stream_is_handed_over_as_it_is():
    chunks = iter([b"x"])
    assert stream_body(RequestFactory().get("/"), chunks) is chunks


def test_under_asgi_the_stream_goes_out_as_an_async_iterator_and_is_closed_at_its_end():
    stream = Stream(answered())
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    body = stream_body(ASGIRequest(scope, io.BytesIO()), stream)
    assert isinstance(body, ThreadedStream)

    async def read() -> list[AnswerEvent]:
        return [event async for event in body]

    assert asyncio.run(read()) == answered()
    assert stream.closed
