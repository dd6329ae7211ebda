"""The ingestion pipeline: parse → chunk → embed → store, as plain functions.

The Celery task and `manage.py ingest --sync` both call `ingest`; nothing here knows about Celery.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

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


def process_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def ingest(document_id: int) -> IngestResult:
    """Process one document to `ready` or `failed`. Transient errors (database, OS) propagate so
    the caller can retry; a bad file never raises."""
    started = time.monotonic()
    updated = Document.objects.filter(pk=document_id).exclude(status=Document.Status.READY)
    claimed = updated.update(
        status=Document.Status.PROCESSING,
        processing_started_at=timezone.now(),
        claimed_by=process_identity(),
        error="",
    )
    document = Document.objects.filter(pk=document_id).first()
    if document is None:
        return IngestResult(document_id, "deleted")
    if not claimed:
        # Already ready: a redelivered message after success. Nothing to redo.
        return IngestResult(document_id, document.status, document.chunk_count, document.page_count)
    Document.objects.filter(pk=document_id).update(attempts=document.attempts + 1)

    try:
        path = Path(document.file.path)
        if not path.exists():
            raise ParseError("The stored file is missing; upload it again.")
        parsed = parse(path, document.content_type)
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
    except ParseError as exc:
        return _fail(document_id, str(exc), started)

    title = document.title or parsed.title or Path(document.original_name).stem
    vectors = embedding.embed_texts([embedding_text(title, d.heading, d.text) for d in drafts])
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
        locked.save(
            update_fields=[
                "status",
                "title",
                "chunk_count",
                "page_count",
                "error",
                "processed_at",
                "updated_at",
            ]
        )
    seconds = time.monotonic() - started
    logger.info("document %s ready: %s chunks in %.1fs", document_id, len(drafts), seconds)
    return IngestResult(document_id, Document.Status.READY, len(drafts), parsed.page_count, seconds)


def _fail(document_id: int, reason: str, started: float) -> IngestResult:
    with transaction.atomic():
        Chunk.objects.filter(document_id=document_id).delete()
        Document.objects.filter(pk=document_id).update(
            status=Document.Status.FAILED, error=reason, chunk_count=0, processed_at=timezone.now()
        )
    logger.info("document %s failed: %s", document_id, reason)
    return IngestResult(
        document_id, Document.Status.FAILED, seconds=time.monotonic() - started, error=reason
    )


def mark_failed(document_id: int, reason: str) -> None:
    """Give up on a document after its retries ran out (called by the task)."""
    _fail(document_id, reason, time.monotonic())
