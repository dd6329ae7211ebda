"""Celery tasks: thin wrappers that call the pipeline and services."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_ready
from django.db import DatabaseError, InterfaceError, OperationalError

from ingestion import pipeline

logger = logging.getLogger(__name__)
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
    except SoftTimeLimitExceeded:
        pipeline.mark_failed(document_id, "Processing took longer than the time limit.")
        return "failed"
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= self.max_retries:
            pipeline.mark_failed(document_id, f"Gave up after {self.max_retries} retries: {exc}")
            return "failed"
        raise


@worker_ready.connect
def requeue_abandoned_documents(sender=None, **kwargs) -> None:
    """When a worker starts, queue again the documents a dead worker left behind.

    kombu's filesystem transport forgets a message once read, and Redis redelivers one only after
    its visibility timeout, so documents claimed by a process of this machine that no longer
    exists are requeued at once (a redelivered duplicate finds the document ready and stops).
    Anything processing for longer than the task time limit is abandoned, wherever it ran.
    """
    from django.conf import settings

    from ingestion import services

    requeued = services.requeue_stuck(
        timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT), include_queued=False
    )
    if requeued:
        logger.warning("requeued %d documents left processing by a stopped worker", len(requeued))
