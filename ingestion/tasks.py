"""Celery tasks: thin wrappers that call the pipeline and services."""

from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError, InterfaceError, OperationalError

from ingestion import pipeline

TRANSIENT_ERRORS = (OperationalError, InterfaceError, DatabaseError, OSError)


@shared_task(
    bind=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=5,
    acks_late=True,
)
def ingest_document(self, document_id: int) -> str:
    try:
        return pipeline.ingest(document_id).status
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= self.max_retries:
            pipeline.mark_failed(document_id, f"Gave up after {self.max_retries} retries: {exc}")
            return "failed"
        raise
