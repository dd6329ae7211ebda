"""A stand-in for a vLLM server: the OpenAI chat-completions protocol over real HTTP on 127.0.0.1,
with a scripted answer, delays and failure modes, recording every request it receives.

Use the `fake_llm` fixture: it starts a server on a random port and points RAG_LLM_BASE_URL at it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

MODEL_ID = "fake-model"


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict | None

    @property
    def messages(self) -> list[dict]:
        return (self.body or {}).get("messages", [])

    def message(self, role: str) -> str:
        """The content of the first message with this role ('' if none)."""
        return next((m["content"] for m in self.messages if m["role"] == role), "")


@dataclass
class FakeOpenAIServer:
    """Scripting knobs (change them in a test, before the request):

    answer: the reply text, or a function of the request body returning it
    failure: None | "500" | "hang" | "close_mid_stream" | "no_done" | "401"
    delay: seconds to wait before answering; piece_delay: between streamed pieces
    piece_chars: size of each streamed piece
    reasoning: thinking the model does before answering ("" for none), sent as
      reasoning_form "reasoning_content" | "reasoning" (vLLM's reasoning parser: a delta field)
      or "tags" (no parser: "<think>…</think>" at the start of the content)
    finish_reason: what the last event says ("stop", or "length" for a cut-off answer)
    trouble_for: a function of the request body returning None, a delay in seconds, or "500",
      to slow down or fail some requests only (e.g. the short query-rewriting jobs)
    hold: an Event: after the first content piece, the rest waits until it is set (at most
      15 s); pieces_sent counts the content pieces sent so far
    """

    answer: str | Callable[[dict], str] = "The answer is in the documents [1]."
    failure: str | None = None
    delay: float = 0.0
    piece_delay: float = 0.0
    piece_chars: int = 4
    reasoning: str = ""
    reasoning_form: str = "reasoning_content"
    finish_reason: str = "stop"
    trouble_for: Callable[[dict], float | str | None] | None = None
    hold: threading.Event | None = None
    pieces_sent: int = 0
    models: list[str] = field(default_factory=lambda: [MODEL_ID])
    requests: list[RecordedRequest] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _release: threading.Event = field(default_factory=threading.Event)

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def reply_for(self, body: dict) -> str:
        return self.answer(body) if callable(self.answer) else self.answer

    def start(self) -> FakeOpenAIServer:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()  # let "hang" handlers return
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeOpenAIServer

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def _record(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        self.server_fake.requests.append(
            RecordedRequest(self.command, self.path, dict(self.headers.items()), body)
        )
        return body

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _fail_early(self) -> bool:
        fake = self.server_fake
        if fake.delay:
            time.sleep(fake.delay)
        if fake.failure == "hang":
            fake._release.wait(60)
            self.close_connection = True
            return True
        if fake.failure == "500":
            self._json(500, {"error": {"message": "CUDA out of memory", "type": "server_error"}})
            return True
        if fake.failure == "401":
            self._json(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
            return True
        return False

    def do_GET(self):
        self._record()
        if self.path.rstrip("/").endswith("/models"):
            if self._fail_early():
                return
            models = [
                {"id": m, "object": "model", "owned_by": "vllm"} for m in self.server_fake.models
            ]
            self._json(200, {"object": "list", "data": models})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        body = self._record() or {}
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": "not found"}})
            return
        if self._fail_early():
            return
        fake = self.server_fake
        trouble = fake.trouble_for(body) if fake.trouble_for else None
        if trouble == "500":
            self._json(500, {"error": {"message": "CUDA out of memory", "type": "server_error"}})
            return
        if trouble:
            fake._release.wait(float(trouble))  # returns early when the server stops
        text = fake.reply_for(body)
        model = body.get("model", MODEL_ID)
        reasoning_field = ""
        if fake.reasoning and fake.reasoning_form == "tags":
            text = f"<think>{fake.reasoning}</think>\n\n{text}"
        elif fake.reasoning:
            reasoning_field = fake.reasoning_form
        if not body.get("stream"):
            message = {"role": "assistant", "content": text}
            if reasoning_field:
                message[reasoning_field] = fake.reasoning
            self._json(
                200,
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": fake.finish_reason,
                        }
                    ],
                },
            )
            return
        self._stream(text, model, reasoning_field)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _event(self, model: str, delta: dict, finish: str | None = None) -> None:
        payload = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        self._chunk(f"data: {json.dumps(payload)}\n\n".encode())

    def _stream(self, text: str, model: str, reasoning_field: str = "") -> None:
        fake = self.server_fake
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._event(model, {"role": "assistant", "content": ""})
        if reasoning_field:
            reasoning = fake.reasoning
            for i in range(0, len(reasoning), fake.piece_chars):
                self._event(model, {reasoning_field: reasoning[i : i + fake.piece_chars]})
        pieces = [text[i : i + fake.piece_chars] for i in range(0, len(text), fake.piece_chars)]
        for index, piece in enumerate(pieces):
            if fake.failure == "close_mid_stream" and index == max(1, len(pieces) // 2):
                # Drop the connection without ending the chunked body: a crashed server.
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            if fake.piece_delay:
                time.sleep(fake.piece_delay)
            if fake.hold is not None and index == 1:
                fake.hold.wait(15)
            self._event(model, {"content": piece})
            fake.pieces_sent += 1
        if fake.failure == "no_done":
            self._chunk(b"")
            return
        self._event(model, {}, finish=fake.finish_reason)
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")  # end of the chunked body


@pytest.fixture
def fake_llm(settings) -> Iterator[FakeOpenAIServer]:
    """A running fake vLLM server; RAG_LLM_BASE_URL points at it, RAG_LLM_MODEL names its model."""
    server = FakeOpenAIServer().start()
    settings.RAG_LLM_BASE_URL = server.base_url
    settings.RAG_LLM_MODEL = MODEL_ID
    settings.RAG_LLM_API_KEY = ""
    settings.RAG_LLM_TIMEOUT = 5.0
    settings.RAG_LLM_CONNECT_TIMEOUT = 2.0
    yield server
    server.stop()
