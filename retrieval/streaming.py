"""Streamed responses under ASGI: the one place where a synchronous stream becomes asynchronous.

Django's ASGI handler reads a synchronous iterator to its end before sending a byte; an answer
stream handed over as an async iterator goes out event by event. Used by the web chat, /api/v1/ask
and the OpenAI-compatible endpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Generic, TypeVar

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest

T = TypeVar("T")
_END = object()


class ThreadedStream(Generic[T]):
    """An async iterator over a synchronous one, each step run in Django's thread-sensitive worker
    thread. Under ASGI that is the request's own thread (Django gives each request one), where the
    view ran: every ORM call of the stream uses that thread's connection, which Django closes when
    the request finishes, and the event loop stays free while the model thinks.

    `close()` closes the synchronous stream (its `finally` saves a half-written answer); Django's
    response.close() calls it in that same thread, and so does the end of iteration.
    """

    def __init__(self, iterator: Iterator[T]):
        self._iterator = iterator
        self._closed = False

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        step = sync_to_async(next, thread_sensitive=True)
        try:
            while (item := await step(self._iterator, _END)) is not _END:
                yield item
        finally:
            # Also reached when the client goes away while the model is still writing.
            await sync_to_async(self.close, thread_sensitive=True)()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()


def stream_body(request: HttpRequest, chunks: Iterator[T]) -> Iterable[T] | ThreadedStream[T]:
    """What to give StreamingHttpResponse: under ASGI an async iterator, so each chunk is sent as
    soon as it is made; under WSGI (and the test client) the synchronous iterator itself."""
    request = getattr(request, "_request", request)  # a DRF Request wraps Django's
    if isinstance(request, ASGIRequest):
        return ThreadedStream(chunks)
    return chunks
