"""The ingestion pipeline: parse → chunk → embed → store, as plain functions.

The Celery task and `manage.py ingest --sync` both call `ingest`; nothing here knows about Celery.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F
from django.utils import timezone

from core import metrics, storage
from ingestion import embedding
from ingestion.chunking import chunk_document, embedding_text
from ingestion.models import Chunk, Document
from ingestion.parsing import ParseError, parse

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    document_id: int
    status: str
    chunks: int = 0
    pages: int | None = None
    seconds: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class Progress:
    """Where a run is: its stage (Document.Stage) and, while embedding, chunks embedded of all."""

    stage: str
    done: int = 0
    total: int = 0

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0


# Called after each progress row is written (and visible to other connections): for tests and
# tools that follow a run from outside; the document's id and where it is.
ProgressHook = Callable[[int, Progress], None]


def progress_of(document: Document) -> Progress | None:
    """The progress of a `processing` document, None for any other (or before its first step)."""
    if document.status != Document.Status.PROCESSING or not document.progress_stage:
        return None
    return Progress(document.progress_stage, document.progress_done, document.progress_total)


def _report(document_id: int, progress: Progress, on_progress: ProgressHook | None) -> None:
    # A plain UPDATE outside any transaction: seen by the console's next poll at once, and cheap
    # (no row lock held, updated_at untouched). A document deleted meanwhile matches nothing.
    Document.objects.filter(pk=document_id, status=Document.Status.PROCESSING).update(
        progress_stage=progress.stage,
        progress_done=progress.done,
        progress_total=progress.total,
    )
    if on_progress is not None:
        on_progress(document_id, progress)


# What a finished run leaves: no progress.
_NO_PROGRESS = {"progress_stage": "", "progress_done": 0, "progress_total": 0}


def process_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# SQLSTATEs of a lost or refused connection: class 08, and the server shutting down or starting.
_CONNECTION_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def is_transient(exc: BaseException) -> bool:
    """Whether running the same work again later can succeed: only a lost connection (to the
    database, or a socket-level ConnectionError to a broker or model server). Everything else,
    IntegrityError and ProgrammingError included, fails the same way every time."""
    if isinstance(exc, InterfaceError | ConnectionError):
        return True
    if isinstance(exc, OperationalError):
        # Django wraps the driver's error; a failed connect has no SQLSTATE at all.
        cause = exc.__cause__ or exc
        sqlstate = getattr(cause, "sqlstate", None)
        return sqlstate is None or sqlstate.startswith(_CONNECTION_SQLSTATES)
    return False


def unexpected_error_reason(exc: BaseException) -> str:
    """What the console shows for a failure that is no fault of the file's format."""
    detail = " ".join(str(exc).split())[:300]
    return (
        f"Unexpected error ({type(exc).__name__}): {detail}"
        if detail
        else (f"Unexpected error ({type(exc).__name__}).")
    )


def stopped_worker_reason(times: int) -> str:
    return (
        f"Processing this file stopped the worker {times} time{'s' if times != 1 else ''}: "
        "too large or malformed. "
        "It is not retried automatically; Retry it once the cause is fixed "
        "(a smaller file, or more memory for the worker)."
    )


def is_stalled(document: Document) -> bool:
    """A `processing` document no worker is working on any more: its claimant was a process of
    this machine that is gone, or it has run past the task time limit (the worker would have
    stopped it)."""
    if document.status != Document.Status.PROCESSING:
        return False
    started = document.processing_started_at
    limit = timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    if started is not None and timezone.now() - started > limit:
        return True
    host, _, pid = document.claimed_by.rpartition(":")
    if host == socket.gethostname():
        import psutil

        return not pid.isdigit() or not psutil.pid_exists(int(pid))
    return False


def _in_other_hands(document: Document) -> bool:
    return (
        document.status == Document.Status.PROCESSING
        and document.claimed_by not in {"", process_identity()}
        and not is_stalled(document)
    )


def ingest(
    document_id: int,
    propagate: tuple[type[BaseException], ...] = (),
    on_progress: ProgressHook | None = None,
) -> IngestResult:
    """Process one document to `ready` or `failed`, with the reason. Only a lost connection
    propagates (`is_transient`), so that the caller can retry, as do the `propagate` exceptions
    (the task's time limit); a bad file or a bug ends the document `failed`, never `processing`.

    A redelivered message for a ready document does nothing. A document whose unfinished runs
    reached RAG_MAX_ATTEMPTS (it stopped the worker each time) fails instead of running again,
    and stays failed whatever message comes, until a person retries it (services.reingest).

    Progress (stage, chunks embedded) is written to the document as it goes; `on_progress` is
    called after each write.
    """
    started = time.monotonic()
    current = Document.objects.filter(pk=document_id).first()
    if current is not None and _in_other_hands(current):
        # A duplicate message (the worker-start requeue and the broker's redelivery can both
        # send one) while another process works on it: claiming it would count a second run.
        return IngestResult(document_id, current.status)
    claimable = Document.objects.filter(
        pk=document_id, unfinished_runs__lt=settings.RAG_MAX_ATTEMPTS
    ).exclude(status=Document.Status.READY)
    claimed = claimable.update(
        status=Document.Status.PROCESSING,
        processing_started_at=timezone.now(),
        claimed_by=process_identity(),
        error="",
        **_NO_PROGRESS,
        attempts=F("attempts") + 1,
        unfinished_runs=F("unfinished_runs") + 1,
    )
    document = Document.objects.filter(pk=document_id).first()
    if document is None:
        return IngestResult(document_id, "deleted")
    if not claimed:
        if document.status in {Document.Status.QUEUED, Document.Status.PROCESSING}:
            return _fail(
                document_id,
                stopped_worker_reason(document.unfinished_runs),
                started,
                keep_count=True,
            )
        # Ready, or failed for stopping the worker: a redelivered message. Nothing to redo.
        return IngestResult(
            document_id,
            document.status,
            document.chunk_count,
            document.page_count,
            error=document.error,
        )
    try:
        return _process(document, started, on_progress)
    except ParseError as exc:
        return _fail(document_id, str(exc), started)
    except propagate:
        raise
    except Exception as exc:
        if isinstance(exc, embedding.EmbeddingUnavailable | embedding.EmbeddingModelError):
            metrics.model_error("embedding")
        if is_transient(exc):
            _release(document_id)
            raise
        logger.exception("document %s failed unexpectedly", document_id)
        return _fail(document_id, unexpected_error_reason(exc), started)


def _process(
    document: Document, started: float, on_progress: ProgressHook | None = None
) -> IngestResult:
    document_id = document.pk
    _report(document_id, Progress(Document.Stage.PARSING), on_progress)
    stage = metrics.INGESTION_STAGE_SECONDS
    with stage.labels(stage="parse").time():
        parsed = _parse_stored(document)
    _report(document_id, Progress(Document.Stage.CHUNKING), on_progress)
    with stage.labels(stage="chunk").time():
        drafts = chunk_document(
            parsed,
            count_tokens=embedding.count_tokens,
            max_tokens=settings.RAG_CHUNK_TOKENS,
            overlap_tokens=settings.RAG_CHUNK_OVERLAP,
            model_max_tokens=embedding.max_tokens(),
        )
    if not drafts:
        raise ParseError(
            "No extractable text (a scanned document needs OCR, which is not enabled)."
        )

    title = document.title or parsed.title or Path(document.original_name).stem
    texts = [embedding_text(title, d.heading, d.text) for d in drafts]
    with stage.labels(stage="embed").time():
        vectors = _embed_in_slices(document_id, texts, on_progress)
    _report(document_id, Progress(Document.Stage.STORING, len(texts), len(texts)), on_progress)
    stored = time.monotonic()
    with transaction.atomic():
        locked = Document.objects.select_for_update().filter(pk=document_id).first()
        if locked is None:  # deleted while we worked
            return IngestResult(document_id, "deleted")
        Chunk.objects.filter(document_id=document_id).delete()
        Chunk.objects.bulk_create(
            [
                Chunk(
                    document_id=document_id,
                    ordinal=ordinal,
                    text=draft.text,
                    title=title[:500],
                    heading=draft.heading,
                    page_start=draft.page_start,
                    page_end=draft.page_end,
                    page_boxes=[list(box) for box in draft.page_boxes],
                    token_count=draft.token_count,
                    embedding=vector,
                )
                for ordinal, (draft, vector) in enumerate(zip(drafts, vectors, strict=True))
            ],
            batch_size=500,
        )
        locked.status = Document.Status.READY
        locked.title = title[:500]
        locked.chunk_count = len(drafts)
        locked.page_count = parsed.page_count
        locked.error = ""
        locked.processed_at = timezone.now()
        locked.unfinished_runs = 0
        locked.claimed_by = ""
        locked.progress_stage, locked.progress_done, locked.progress_total = "", 0, 0
        locked.save(
            update_fields=[
                "status",
                "title",
                "chunk_count",
                "page_count",
                "error",
                "processed_at",
                "unfinished_runs",
                "claimed_by",
                "progress_stage",
                "progress_done",
                "progress_total",
                "updated_at",
            ]
        )
    seconds = time.monotonic() - started
    stage.labels(stage="store").observe(time.monotonic() - stored)
    metrics.INGESTED_CHUNKS.inc(len(drafts))
    metrics.INGESTED_DOCUMENTS.labels(result="ready").inc()
    metrics.INGESTION_CHUNKS_PER_SECOND.observe(len(drafts) / max(seconds, 1e-6))
    logger.info("document %s ready: %s chunks in %.1fs", document_id, len(drafts), seconds)
    return IngestResult(document_id, Document.Status.READY, len(drafts), parsed.page_count, seconds)


def _parse_stored(document: Document):
    """Parse the stored file where it lies (folder storage) or from a temporary local copy
    (object storage): the sandboxed parser reads a path."""
    with ExitStack() as stack:
        try:
            path = stack.enter_context(storage.local_copy(document.file))
        except FileNotFoundError as exc:
            raise ParseError("The stored file is missing; upload it again.") from exc
        return parse(path, document.content_type)


def _embed_in_slices(
    document_id: int, texts: list[str], on_progress: ProgressHook | None
) -> list[np.ndarray]:
    """Embed in slices of RAG_EMBEDDING_SLICE texts, reporting the count embedded after each:
    a document of thousands of chunks shows how far it is. A slice holds many model batches, so
    the encoder works as fast as on the whole list."""
    step = max(1, settings.RAG_EMBEDDING_SLICE)
    _report(document_id, Progress(Document.Stage.EMBEDDING, 0, len(texts)), on_progress)
    vectors: list[np.ndarray] = []
    for start in range(0, len(texts), step):
        vectors.extend(embedding.embed_texts(texts[start : start + step]))
        done = min(start + step, len(texts))
        _report(document_id, Progress(Document.Stage.EMBEDDING, done, len(texts)), on_progress)
    return vectors


def _fail(document_id: int, reason: str, started: float, keep_count: bool = False) -> IngestResult:
    """End a document `failed`. The run finished, so its count of unfinished runs goes back to
    0, except for a document given up on for stopping the worker (`keep_count`): the count is
    what keeps any later message from running it again."""
    counted = {} if keep_count else {"unfinished_runs": 0}
    with transaction.atomic():
        Chunk.objects.filter(document_id=document_id).delete()
        Document.objects.filter(pk=document_id).update(
            status=Document.Status.FAILED,
            error=reason,
            chunk_count=0,
            processed_at=timezone.now(),
            claimed_by="",
            **_NO_PROGRESS,
            **counted,
        )
    metrics.INGESTED_DOCUMENTS.labels(result="failed").inc()
    logger.info("document %s failed: %s", document_id, reason)
    return IngestResult(
        document_id, Document.Status.FAILED, seconds=time.monotonic() - started, error=reason
    )


def _release(document_id: int) -> None:
    """Give a claim back after a lost connection: the retry is not a run that stopped a worker.
    Best effort: with the database gone, the claim stays and the retry counts it."""
    try:
        Document.objects.filter(pk=document_id, status=Document.Status.PROCESSING).update(
            status=Document.Status.QUEUED,
            claimed_by="",
            **_NO_PROGRESS,
            unfinished_runs=F("unfinished_runs") - 1,
        )
    except Exception:  # noqa: BLE001  (the original error is the one worth raising)
        logger.warning("could not release document %s after a lost connection", document_id)


def mark_failed(document_id: int, reason: str) -> None:
    """End a document the task gave up on (retries spent, time limit, a crash in the task). A
    document that meanwhile became ready or failed is left as it is."""
    if Document.objects.filter(
        pk=document_id, status__in=[Document.Status.QUEUED, Document.Status.PROCESSING]
    ).exists():
        _fail(document_id, reason, time.monotonic())


def give_up_on_stuck(document: Document) -> bool:
    """For the automatic requeue of stuck work: fail a document that already stopped the worker
    RAG_MAX_ATTEMPTS times (True) rather than queue it again (False)."""
    if document.unfinished_runs < settings.RAG_MAX_ATTEMPTS:
        return False
    reason = stopped_worker_reason(document.unfinished_runs)
    _fail(document.pk, reason, time.monotonic(), keep_count=True)
    return True


def forgive_interrupted_runs(pids: list[int]) -> int:
    """Runs of these processes of this machine were stopped by the operator (`make stop`, Ctrl-C
    while a document was processing), not by the file: do not count them toward
    RAG_MAX_ATTEMPTS. The documents stay `processing` for the worker-start requeue to find."""
    host = socket.gethostname()
    return Document.objects.filter(
        status=Document.Status.PROCESSING,
        claimed_by__in=[f"{host}:{pid}" for pid in pids],
        unfinished_runs__gt=0,
    ).update(unfinished_runs=F("unfinished_runs") - 1)
