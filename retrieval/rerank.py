"""Optional rerank step: a local cross-encoder (RAG_RERANKER_MODEL, a model directory) rescoring
the fused search candidates. Without one, or when it cannot be loaded, search keeps fusion order.

Nothing is fetched from a model hub: the directory is loaded with local_files_only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

_lock = threading.Lock()
# Loaded models by setting value; None records "unusable" so the warning is logged only once.
_loaded: dict[str, Reranker | None] = {}


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


def get_reranker() -> Reranker | None:
    """The configured reranker, loaded once per process; None when none is configured or it
    cannot be used (a warning is logged the first time)."""
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
