"""Every output made from the answer stream: the chat page's and the API's server-sent events,
OpenAI's completion chunks, the API's collected answer, and the hand-over to ASGI.

Each output is a small function over the typed events of retrieval.answer_events (`match` +
`assert_never`, so mypy names any kind an output forgets); `sse` frames every server-sent event;
`stream_body` makes any of them go out under ASGI event by event. Views only pick one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from dataclasses import replace
from itertools import islice
from typing import Generic, TypeVar, assert_never

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import reverse
from rest_framework import exceptions

from core.api_errors import AnswerFailed, ModelUnavailable
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
    close,
    collect,
)
from retrieval.models import Message
from retrieval.rendering import AnswerSanitizer, sanitize_answer
from retrieval.serializers import CitationSerializer

__all__ = [
    "OPENAI_DONE",
    "ThreadedStream",
    "api_sse",
    "citation_dicts",
    "collect",
    "collect_for_api",
    "event_stream_response",
    "fail_fast",
    "failure_for",
    "openai_chunks",
    "sanitized",
    "sse",
    "stream_body",
    "web_sse",
]

logger = logging.getLogger(__name__)


# --- server-sent events -------------------------------------------------------------------------

# JSON escapes every control character, so a data line never breaks; these three are line breaks
# to str.splitlines() (and so to some SSE clients) although JSON may carry them raw.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def sse(event: str | None, data: object) -> bytes:
    """One server-sent event whose data is a JSON document (without `event`: a plain message, as
    OpenAI's stream sends). Non-ASCII text goes as UTF-8, which the page's script and the SDKs
    decode; JSON's \\u escapes would serve equally, only longer."""
    payload = json.dumps(data, ensure_ascii=False).translate(_LINE_BREAKS)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def event_stream_response(
    request: HttpRequest, chunks: Iterator[bytes], *, cache_control: str = "no-cache"
) -> StreamingHttpResponse:
    """Server-sent events, sent one by one as they are made (also under ASGI)."""
    response = StreamingHttpResponse(
        stream_body(request, chunks), content_type="text/event-stream; charset=utf-8"
    )
    response["Cache-Control"] = cache_control
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on as it comes
    return response


# --- the web page -------------------------------------------------------------------------------

WEB_STREAM_FAILED = "Something went wrong while answering. Try again."


def web_sse(events: Iterator[AnswerEvent]) -> Generator[bytes, None, None]:
    """The chat page's events. Text travels as JSON strings; the page inserts it as text nodes
    and later swaps in the server's sanitised rendering (`fragment_url`)."""
    message_id = 0
    try:
        for event in events:
            match event:
                case Meta():
                    message_id = event.message_id
                    yield sse(
                        "meta",
                        {"conversation_id": event.conversation_id, "message_id": message_id},
                    )
                case Thinking():
                    pass  # the page says "Thinking…" until the first token anyway
                case Token():
                    yield sse("token", {"text": event.text})
                case Citations():
                    yield sse("citations", {"citations": _web_sources(message_id, event)})
                case Done():
                    yield sse(
                        "done", {"outcome": event.outcome, "fragment_url": _fragment(message_id)}
                    )
                case Error():
                    fragment = _fragment(message_id)
                    yield sse(
                        "error",
                        {"message": event.text, "outcome": event.outcome, "fragment_url": fragment},
                    )
                case _:
                    assert_never(event)
    except Exception:
        # The stream has started: the status line is sent, so the failure travels as an event.
        logger.exception("answer stream failed")
        yield sse("error", {"message": WEB_STREAM_FAILED})
    finally:
        close(events)


def _fragment(message_id: int) -> str:
    return reverse("web:message", args=[message_id]) if message_id else ""


def _web_sources(message_id: int, event: Citations) -> list[dict]:
    return [
        {
            "number": c.number,
            "title": c.document_title,
            "page": c.page,
            "url": reverse("web:source", args=[message_id, c.number]) if message_id else "",
        }
        for c in event.citations
    ]


# --- the API ------------------------------------------------------------------------------------


def failure_for(error: Error) -> exceptions.APIException:
    """The API error (503) for a failed answer."""
    if error.outcome == Message.Outcome.MODEL_UNAVAILABLE:
        return ModelUnavailable(error.text or None)
    return AnswerFailed(error.text or None)


def citation_dicts(citations: list[CitationView]) -> list[dict]:
    return list(CitationSerializer(citations, many=True).data)


def fail_fast(events: Iterator[AnswerEvent]) -> Replayed:
    """Run the answer up to its first event after Meta, so a model that is down is reported with
    a real status code (503) before any bytes of a stream are sent. Returns the whole stream."""
    head: list[AnswerEvent] = []
    for event in events:
        head.append(event)
        if not isinstance(event, Meta):
            break
    if head and isinstance(head[-1], Error):
        close(events)
        raise failure_for(head[-1])
    return Replayed(head, events)


class Replayed(Iterator[AnswerEvent]):
    """Events already read, then the rest of the stream; closing it closes the stream."""

    def __init__(self, head: list[AnswerEvent], rest: Iterator[AnswerEvent]):
        self._head = head
        self._rest = rest

    def __next__(self) -> AnswerEvent:
        if self._head:
            return self._head.pop(0)
        return next(self._rest)

    def close(self) -> None:
        self._head.clear()
        close(self._rest)


TEXT_ENDS = (Citations, Done, Error)  # after one of these no more text comes


def sanitized(events: Iterable[AnswerEvent]) -> Iterator[AnswerEvent]:
    """The stream with its text sanitised for clients that render the Markdown themselves (see
    retrieval.rendering.AnswerSanitizer): held-back text comes out before the text ends."""
    sanitizer = AnswerSanitizer()
    for event in events:
        if isinstance(event, Token):
            if text := sanitizer.feed(event.text):
                yield Token(text)
            continue
        if isinstance(event, TEXT_ENDS) and (held := sanitizer.flush()):
            yield Token(held)
        yield event


def collect_for_api(events: Iterable[AnswerEvent]) -> CollectedAnswer:
    """The whole answer for an API client: its API error if it failed, its text sanitised (API
    clients render the Markdown: no images, no links or HTML reaching other hosts)."""
    answer = collect(events)
    if answer.error is not None:
        raise failure_for(answer.error)
    return replace(answer, text=sanitize_answer(answer.text))


def api_sse(events: Iterator[AnswerEvent]) -> Generator[bytes, None, None]:
    """/api/v1/ask with stream=true: meta, token…, citations, done (or error)."""
    try:
        for event in sanitized(events):
            match event:
                case Meta():
                    yield sse(
                        "meta", {"conversation": event.conversation_id, "message": event.message_id}
                    )
                case Thinking():
                    pass
                case Token():
                    yield sse("token", {"text": event.text})
                case Citations():
                    yield sse("citations", {"citations": citation_dicts(event.citations)})
                case Done():
                    yield sse("done", {"outcome": event.outcome})
                case Error():
                    code = failure_for(event).default_code
                    yield sse("error", {"code": code, "message": event.text})
                case _:
                    assert_never(event)
    finally:
        close(events)  # the client went away: let the answer save what it has


OPENAI_DONE = b"data: [DONE]\n\n"


def openai_chunks(base: dict, events: Iterator[AnswerEvent]) -> Generator[bytes, None, None]:
    """OpenAI's chat.completion.chunk stream: a role chunk, content chunks, a stop chunk (with our
    citations, conversation_id and outcome), [DONE]; an error object if the answer fails."""

    def chunk(delta: dict, finish_reason: str | None = None, **extra: object) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse(None, {**base, "choices": [choice], **extra})

    conversation_id: int | None = None
    citations: list[dict] = []
    try:
        yield chunk({"role": "assistant", "content": ""})
        for event in sanitized(events):
            match event:
                case Meta():
                    conversation_id = event.conversation_id
                case Thinking():
                    pass
                case Token():
                    yield chunk({"content": event.text})
                case Citations():
                    citations = citation_dicts(event.citations)
                case Done():
                    yield chunk(
                        {},
                        "stop",
                        citations=citations,
                        conversation_id=conversation_id,
                        outcome=event.outcome,
                    )
                case Error():
                    code = failure_for(event).default_code
                    error = {"message": event.text, "type": "api_error", "code": code}
                    yield sse(None, {"error": error})
                case _:
                    assert_never(event)
        yield OPENAI_DONE
    finally:
        close(events)


# --- under ASGI ---------------------------------------------------------------------------------

# Django's ASGI handler reads a synchronous iterator to its end before sending a byte; a stream
# handed over as an async iterator goes out event by event.

T = TypeVar("T")


def _next_in_list(iterator: Iterator[T]) -> list[T]:
    """The next item in a list, [] at the end: StopIteration cannot cross into a coroutine."""
    return list(islice(iterator, 1))


class ThreadedStream(Generic[T]):
    """An async iterator over a synchronous one, each step run in Django's thread-sensitive worker
    thread. Under ASGI that is the request's own thread (Django gives each request one), where the
    view ran: every ORM call of the stream uses that thread's connection, which Django closes when
    the request finishes, and the event loop stays free while the model thinks.

    `close()` closes the synchronous stream (its `finally` saves a half-written answer); Django's
    response.close() calls it in that same thread, and so does the end of iteration.
    """

    def __init__(self, iterator: Iterator[T]) -> None:
        self._iterator = iterator
        self._closed = False

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        step = sync_to_async(_next_in_list, thread_sensitive=True)
        try:
            while item := await step(self._iterator):
                yield item[0]
        finally:
            # Also reached when the client goes away while the model is still writing.
            await sync_to_async(self.close, thread_sensitive=True)()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        closer = getattr(self._iterator, "close", None)
        if closer is not None:
            closer()


def stream_body(request: HttpRequest, chunks: Iterator[T]) -> Iterable[T] | ThreadedStream[T]:
    """What to give StreamingHttpResponse: under ASGI an async iterator, so each chunk is sent as
    soon as it is made; under WSGI (and the test client) the synchronous iterator itself."""
    request = getattr(request, "_request", request)  # a DRF Request wraps Django's
    if isinstance(request, ASGIRequest):
        return ThreadedStream(chunks)
    return chunks
