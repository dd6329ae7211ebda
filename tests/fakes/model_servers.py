"""Stand-ins for in-house embedding and rerank servers, over real HTTP on 127.0.0.1:

- FakeEmbeddingServer: OpenAI's POST /v1/embeddings (what vLLM and text-embeddings-inference
  serve) and GET /v1/models, computing the vectors with the packaged MiniLM model.
- FakeRerankServer: vLLM's Cohere/Jina-style POST /v1/rerank ({model, query, documents} →
  {results: [{index, relevance_score}]}) and text-embeddings-inference's POST /rerank ({query,
  texts} → [{index, score}]), scoring with a function of (query, text).

Both record every request and can be told to fail; the fixtures point the settings at them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

EMBEDDING_MODEL_ID = "fake-embedder"
RERANK_MODEL_ID = "fake-reranker"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict | None


class _Server:
    """A threaded HTTP server calling `handle(method, path, body) -> (status, payload)`."""

    requests: list[Recorded]

    def start(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                owner.requests.append(
                    Recorded(self.command, self.path, dict(self.headers.items()), body)
                )
                status, payload = owner.handle(self.command, self.path.rstrip("/"), body or {})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def handle(self, method: str, path: str, body: dict) -> tuple[int, object]:
        raise NotImplementedError


@dataclass
class FakeEmbeddingServer(_Server):
    """Knobs: fail_next (answer the next N requests with 503), dimensions (pad or cut the
    vectors to this size, to play a model of another size)."""

    fail_next: int = 0
    dimensions: int | None = None
    requests: list[Recorded] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    @property
    def embedding_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/embeddings")]

    def handle(self, method: str, path: str, body: dict) -> tuple[int, object]:
        if self.fail_next > 0:
            self.fail_next -= 1
            return 503, {"error": {"message": "model is loading", "type": "server_error"}}
        if method == "GET" and path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": EMBEDDING_MODEL_ID, "object": "model"}]}
        if method != "POST" or path != "/v1/embeddings":
            return 404, {"error": {"message": "not found"}}
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        from ingestion.embedding import get_model  # the packaged MiniLM, as a server would hold

        vectors = get_model().encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        if self.dimensions is not None:
            size = vectors.shape[1]
            vectors = (
                vectors[:, : self.dimensions]
                if self.dimensions <= size
                else np.pad(vectors, ((0, 0), (0, self.dimensions - size)))
            )
        data = [
            {"object": "embedding", "index": i, "embedding": [float(x) for x in vector]}
            for i, vector in enumerate(vectors)
        ]
        data.reverse()  # servers may answer out of order: the index says which is which
        return 200, {"object": "list", "model": body.get("model"), "data": data}


def _word_overlap(query: str, text: str) -> float:
    words = set(query.lower().split())
    return float(sum(1 for word in set(text.lower().split()) if word in words))


@dataclass
class FakeRerankServer(_Server):
    """Knobs: score (query, text) → relevance, failure None | "500", speaks (the formats it
    understands: a TEI server answers 422 to a Cohere-style body, as the real one does)."""

    score: Callable[[str, str], float] = _word_overlap
    failure: str | None = None
    speaks: tuple[str, ...] = ("cohere", "tei")
    requests: list[Recorded] = field(default_factory=list)

    def handle(self, method: str, path: str, body: dict) -> tuple[int, object]:
        if self.failure == "500":
            return 500, {"error": {"message": "CUDA out of memory"}}
        cohere = "cohere" in self.speaks
        if (
            cohere
            and method == "POST"
            and path in ("/v1/rerank", "/rerank")
            and "documents" in body
        ):
            scored = [(self.score(body["query"], d), i) for i, d in enumerate(body["documents"])]
            scored.sort(key=lambda pair: -pair[0])
            results = [
                {"index": i, "document": {"text": body["documents"][i]}, "relevance_score": s}
                for s, i in scored[: body.get("top_n") or len(scored)]
            ]
            return 200, {"id": "rerank-fake", "model": body.get("model"), "results": results}
        if "tei" in self.speaks and method == "POST" and path == "/rerank" and "texts" in body:
            scored = [(self.score(body["query"], t), i) for i, t in enumerate(body["texts"])]
            scored.sort(key=lambda pair: -pair[0])
            return 200, [{"index": i, "score": s} for s, i in scored]
        return 404 if path not in ("/v1/rerank", "/rerank") else 422, {"error": "bad request"}


@pytest.fixture
def fake_embedder(settings) -> Iterator[FakeEmbeddingServer]:
    """A running stand-in embedding server; RAG_EMBEDDING_URL points at it."""
    server = FakeEmbeddingServer().start()
    settings.RAG_EMBEDDING_URL = server.base_url
    settings.RAG_EMBEDDING_REMOTE_MODEL = ""
    settings.RAG_EMBEDDING_API_KEY = ""
    settings.RAG_EMBEDDING_TIMEOUT = 10.0
    yield server
    server.stop()


@pytest.fixture
def fake_reranker(settings) -> Iterator[FakeRerankServer]:
    """A running stand-in rerank server (both flavours); RAG_RERANKER_URL is left to the test."""
    server = FakeRerankServer().start()
    yield server
    server.stop()
