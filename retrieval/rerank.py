"""Optional rerank step: a cross-encoder rescoring the fused search candidates, either local
(RAG_RERANKER_MODEL, a model directory) or an in-house rerank server (RAG_RERANKER_URL: vLLM's
Cohere/Jina-style /v1/rerank or text-embeddings-inference's /rerank). Without one, or when it
cannot be loaded or reached, search keeps fusion order and a warning is logged.

Nothing is fetched from a model hub: the directory is loaded with local_files_only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import httpx
from django.conf import settings

from core import egress, metrics, model_http

logger = logging.getLogger(__name__)

_lock = threading.Lock()
# Loaded models by setting value; None records "unusable" so the warning is logged only once.
_loaded: dict[str, Scorer | None] = {}

# The two wire formats (RAG_RERANKER_API): "cohere" is vLLM's (and Jina's, Infinity's)
# {model, query, documents} → {results: [{index, relevance_score}]} at {url}/rerank; "tei" is
# text-embeddings-inference's {query, texts} → [{index, score}] at {url}/rerank.
FLAVOURS = ("cohere", "tei")


class RerankUnavailable(Exception):
    """The rerank server could not be reached or answered something unusable; `str()` says why."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        metrics.model_error("reranker")  # every failure raises this once: counted for /metrics


class Scorer(Protocol):
    def score(self, question: str, passages: Sequence[str]) -> list[float]: ...


class Reranker:
    """Scores (question, passage) pairs with a sentence-transformers CrossEncoder."""

    def __init__(self, path: Path):
        from sentence_transformers import CrossEncoder

        self.path = path
        self.model = CrossEncoder(
            str(path), device=settings.RAG_EMBEDDING_DEVICE, local_files_only=True
        )

    def score(self, question: str, passages: Sequence[str]) -> list[float]:
        """One relevance score per passage, higher is better."""
        if not passages:
            return []
        scores = self.model.predict(
            [(question, passage) for passage in passages], show_progress_bar=False
        )
        return [float(s) for s in scores]


def get_reranker() -> Scorer | None:
    """The configured reranker (the server when RAG_RERANKER_URL is set, else the local model),
    made once per process; None when none is configured or it cannot be used (a warning is
    logged the first time)."""
    url = settings.RAG_RERANKER_URL
    if url:
        key = f"url:{url}|{settings.RAG_RERANKER_API}|{settings.RAG_RERANKER_REMOTE_MODEL}"
        if key not in _loaded:
            with _lock:
                _loaded[key] = _remote(url)
        return _loaded[key]
    name = settings.RAG_RERANKER_MODEL
    if not name:
        return None
    if name in _loaded:
        return _loaded[name]
    with _lock:
        if name not in _loaded:
            _loaded[name] = _load(name)
    return _loaded[name]


def _load(name: str) -> Reranker | None:
    path = Path(name).expanduser()
    if not path.is_dir():
        logger.warning("RAG_RERANKER_MODEL=%s is not a directory; search keeps fusion order.", name)
        return None
    try:
        return Reranker(path.resolve())
    except Exception as exc:  # a broken model directory must degrade search, not break it
        logger.warning(
            "Could not load the reranker at %s (%s: %s); search keeps fusion order.",
            path,
            type(exc).__name__,
            exc,
        )
        return None


# --- an in-house rerank server ------------------------------------------------------------------


def _remote(url: str) -> RemoteReranker | None:
    if not egress.endpoint_allowed(url, settings.RAG_ALLOWED_HOSTS_EGRESS):
        logger.warning(
            "RAG_RERANKER_URL=%s is neither loopback nor on RAG_ALLOWED_HOSTS_EGRESS; passages "
            "are not sent there and search keeps fusion order.",
            url,
        )
        return None
    flavour = settings.RAG_RERANKER_API
    if flavour not in (*FLAVOURS, "auto"):
        logger.warning(
            "RAG_RERANKER_API=%s is not one of auto, %s; search keeps fusion order.",
            flavour,
            ", ".join(FLAVOURS),
        )
        return None
    return RemoteReranker(url, flavour, settings.RAG_RERANKER_REMOTE_MODEL)


class RemoteReranker:
    """POST {url}/rerank in one of the two formats. With flavour "auto" the first guess follows
    the URL (a path ending in /v1 is vLLM's OpenAI-style server, a bare host is TEI); a 404 or 422
    to it tries the other format, and the one that answered is kept."""

    def __init__(self, url: str, flavour: str = "auto", model: str = ""):
        self.url = url.rstrip("/").removesuffix("/rerank")
        self.model = model
        self.auto = flavour == "auto"
        if self.auto:
            flavour = "cohere" if self.url.endswith("/v1") else "tei"
        self.flavour = flavour
        self.timeout = httpx.Timeout(
            settings.RAG_RERANKER_TIMEOUT, connect=min(2.0, settings.RAG_RERANKER_TIMEOUT)
        )

    def score(self, question: str, passages: Sequence[str]) -> list[float]:
        """One relevance score per passage, in input order. Raises RerankUnavailable."""
        if not passages:
            return []
        flavours = [self.flavour] + (
            [f for f in FLAVOURS if f != self.flavour] if self.auto else []
        )
        problem = ""
        for flavour in flavours:
            try:
                with model_http.model_client(self.timeout) as client:
                    response = client.post(
                        self.url + "/rerank",
                        json=self._body(flavour, question, passages),
                        headers=self._headers(),
                    )
            except model_http.EgressRefused as exc:
                raise RerankUnavailable(str(exc)) from exc
            except httpx.HTTPError as exc:
                raise RerankUnavailable(f"{type(exc).__name__}: {exc}") from exc
            if response.status_code in (404, 405, 422) and self.auto:
                problem = f"HTTP {response.status_code} to the {flavour} format"
                continue  # the other format may be the one this server speaks
            if response.status_code >= 400:
                raise RerankUnavailable(f"HTTP {response.status_code}: {response.text[:200]!r}")
            scores = _scores(response, len(passages))
            self.flavour, self.auto = flavour, False  # this server's format, from now on
            return scores
        raise RerankUnavailable(problem or "no format was accepted")

    def _body(self, flavour: str, question: str, passages: Sequence[str]) -> dict:
        if flavour == "tei":
            # raw_scores false: TEI applies the model's sigmoid, like vLLM's relevance_score.
            return {"query": question, "texts": list(passages), "truncate": True}
        body: dict = {"query": question, "documents": list(passages)}
        if self.model:
            body["model"] = self.model
        return body

    def _headers(self) -> dict[str, str]:
        key = settings.RAG_RERANKER_API_KEY
        return {"Authorization": f"Bearer {key}"} if key else {}


def _scores(response: httpx.Response, count: int) -> list[float]:
    """Scores in input order from either format: {results: [{index, relevance_score}]} or
    [{index, score}]. Every passage must be scored exactly once."""
    try:
        payload = response.json()
        items = payload["results"] if isinstance(payload, dict) else payload
        pairs = [
            (int(item["index"]), float(item.get("relevance_score", item.get("score"))))
            for item in items
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise RerankUnavailable(f"unexpected answer {response.text[:200]!r}") from exc
    scores: list[float | None] = [None] * count
    for index, value in pairs:
        if 0 <= index < count:
            scores[index] = value
    if any(value is None for value in scores):
        raise RerankUnavailable(f"{len(pairs)} scores for {count} passages")
    return [float(value) for value in scores if value is not None]
