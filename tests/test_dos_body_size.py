"""Oversize request bodies are refused in front of Django with 413, before they are read or
spooled to disk: JSON endpoints at DATA_UPLOAD_MAX_MEMORY_SIZE, uploads at the upload limit.

The application is called through the ASGI protocol itself (scope, receive, send), the way
uvicorn calls it; `receive` counts how much of the body was asked for.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync

from ragsite.asgi import application

CHUNK = 64 * 1024


class Client:
    """One ASGI HTTP request: the body offered in chunks, the response collected."""

    def __init__(self, path: str, chunks: int, content_length: bool, content_type: bytes):
        self.path = path
        self.chunks = chunks
        self.content_length = content_length
        self.content_type = content_type
        self.reads = 0  # body chunks the application asked for
        self.status: int | None = None
        self.body = b""

    async def receive(self) -> dict:
        if self.reads >= self.chunks:
            await asyncio.Event().wait()  # like a server: nothing more until the client leaves
        self.reads += 1
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": self.reads < self.chunks}

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    async def run(self) -> Client:
        headers = [(b"host", b"testserver"), (b"content-type", self.content_type)]
        if self.content_length:
            headers.append((b"content-length", str(self.chunks * CHUNK).encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        await application(scope, self.receive, self.send)
        return self


def post(path: str, chunks: int, *, content_length: bool, multipart: bool = False) -> Client:
    content_type = b"multipart/form-data; boundary=xyz" if multipart else b"application/json"
    return async_to_sync(Client(path, chunks, content_length, content_type).run)()


@pytest.fixture
def small_limits(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * CHUNK
    settings.RAG_MAX_UPLOAD_MB = 1
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2  # uploads: 2 MB + 1 MB of form overhead


@pytest.mark.parametrize("path", ["/api/v1/ask", "/api/v1/openai/chat/completions", "/"])
def test_a_declared_length_over_the_limit_is_413_before_any_byte_is_read(small_limits, path):
    client = post(path, 100, content_length=True)
    assert client.status == 413
    assert client.reads == 0
    error = json.loads(client.body)["error"]
    assert error["code"] == "too_large"
    assert "larger than the 262144 bytes" in error["message"]


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(small_limits):
    client = post("/api/v1/ask", 100, content_length=False)
    assert client.status == 413
    assert client.reads == 5  # 4 chunks fit; the fifth passes the limit; nothing more is read
    assert json.loads(client.body)["error"]["code"] == "too_large"


@pytest.mark.django_db
def test_a_body_within_the_limit_reaches_django(small_limits):
    client = post("/api/v1/ask", 2, content_length=False)
    assert client.reads == 2
    assert client.status == 401  # Django answered: no credentials


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    ["/api/v1/documents/", "/console/collections/1/upload/", "/admin/ingestion/document/upload/"],
)
def test_uploads_may_be_as_large_as_their_files(small_limits, path):
    # 2 MB: over the JSON limit, within two files of 1 MB: read whole and handed to Django.
    within = post(path, 32, content_length=True, multipart=True)
    assert within.reads == 32
    assert within.status != 413

    over = post(path, 64, content_length=True, multipart=True)
    assert over.status == 413
    assert over.reads == 0
    assert "larger than the 3.0 MB" in json.loads(over.body)["error"]["message"]
