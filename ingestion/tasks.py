"""Celery tasks: thin wrappers that call the pipeline. services queues them; they never call
services back (what a starting worker requeues is services.requeue_abandoned_documents,
connected to Celery's worker_ready in IngestionConfig).

Every way a task can end leaves its document `ready` or `failed` with a reason: the pipeline
fails what it can explain, and `IngestTask.on_failure` ends the rest (retries spent, the hard
time limit, a crash in the task itself), as paperless-ngx's consumer does.
"""

from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval

from ingestion import pipeline

logger = logging.getLogger(__name__)
MAX_RETRIES = 5  # for a lost connection only (pipeline.is_transient)


class IngestTask(Task):
    """The ingestion task's failure callback: whatever escaped, the document ends `failed`."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        document_id = args[0] if args else kwargs.get("document_id")
        if document_id is None:
            return
        if isinstance(exc, TimeLimitExceeded | SoftTimeLimitExceeded):
            reason = time_limit_reason()
        elif pipeline.is_transient(exc):
            reason = f"Gave up after {MAX_RETRIES} retries: {exc}"
        else:
            reason = pipeline.unexpected_error_reason(exc)
        try:
            pipeline.mark_failed(int(document_id), reason)
        except Exception:  # noqa: BLE001  (a callback must not raise; the log keeps the why)
            logger.exception("could not mark document %s failed (%s)", document_id, reason)


def time_limit_reason() -> str:
    from django.conf import settings

    return (
        f"Processing took longer than the time limit ({settings.CELERY_TASK_TIME_LIMIT} s, "
        "RAG_TASK_TIME_LIMIT)."
    )


@shared_task(bind=True, base=IngestTask, acks_late=True, max_retries=MAX_RETRIES)
def ingest_document(self, document_id: int) -> str:
    try:
        return pipeline.ingest(document_id, propagate=(SoftTimeLimitExceeded,)).status
    except SoftTimeLimitExceeded:
        pipeline.mark_failed(document_id, time_limit_reason())
        return "failed"
    except Exception as exc:
        if not pipeline.is_transient(exc):
            raise  # on_failure ends the document
        # A lost connection: the same work can succeed later. Past MAX_RETRIES, retry() raises
        # `exc` and on_failure ends the document.
        countdown = get_exponential_backoff_interval(5, self.request.retries, 300, full_jitter=True)
        raise self.retry(exc=exc, countdown=countdown) from exc
