"""ASGI entry point: uvicorn serves this, so many streamed answers run at once.

Django's ASGI handler copies a whole request body to a temporary file before any view or setting
looks at it (and DRF's JSON parser ignores DATA_UPLOAD_MAX_MEMORY_SIZE), so the body size is
checked here, in front of Django: too large is a 413 before the body is read.
The MCP server (retrieval.mcp_server) is mounted at /mcp behind the same check.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from django.core.asgi import get_asgi_application

from ragsite import bootstrap

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
bootstrap.prepare()  # the data dir, the secret key, the embedded database: before any connection
django_application = get_asgi_application()

from django.conf import settings  # noqa: E402  (after setup, like Django's own asgi.py)
from django.urls import Resolver404, resolve  # noqa: E402

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# Views that take file uploads (multipart): the API, the console and the admin.
UPLOAD_VIEWS = frozenset({"api-documents", "console:upload", "admin:ingestion_document_upload"})
# Room for the form fields and multipart framing around the files themselves.
UPLOAD_OVERHEAD = 1024 * 1024


def body_limit(path: str) -> int | None:
    """The most bytes a request body to `path` may have (None: no limit).

    Upload views: every file of an upload at its largest (RAG_MAX_UPLOAD_MB times
    RAG_MAX_FILES_PER_UPLOAD). Everything else (JSON, forms): DATA_UPLOAD_MAX_MEMORY_SIZE.
    """
    try:
        view = resolve(path).view_name
    except Resolver404:
        view = ""
    if view in UPLOAD_VIEWS:
        files = settings.DATA_UPLOAD_MAX_NUMBER_FILES or 1
        return settings.RAG_MAX_UPLOAD_MB * 1024 * 1024 * files + UPLOAD_OVERHEAD
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


async def _refuse(send: Send, limit: int) -> None:
    megabytes = limit / (1024 * 1024)
    size = f"{megabytes:.1f} MB" if megabytes >= 1 else f"{limit} bytes"
    body = json.dumps(
        {
            "error": {
                "code": "too_large",
                "message": f"The request body is larger than the {size} this endpoint accepts.",
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),  # the rest of the body is never read
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """Refuses request bodies over `body_limit` with 413: at once when Content-Length says so,
    else (a chunked body) as soon as the bytes received pass the limit, without reading on."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        limit = body_limit(path or "/")
        if limit is None:
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > limit:
            await _refuse(send, limit)
            return

        received = 0
        too_large = False

        async def counted_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Django stops reading at a disconnect and sends nothing; we answer.
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counted_receive, send)
        if too_large:
            await _refuse(send, limit)


from retrieval import mcp_server  # noqa: E402  (its tools use the ORM: after setup)


async def route(scope: Scope, receive: Receive, send: Send) -> None:
    """/mcp (and the lifespan, which starts the MCP server's session manager) to the MCP server,
    everything else to Django."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    if scope["type"] == "lifespan" or (scope["type"] == "http" and mcp_server.is_mcp_path(path)):
        await mcp_server.application(scope, receive, send)
    else:
        await cast("App", django_application)(scope, receive, send)


application = BodySizeLimit(route)
