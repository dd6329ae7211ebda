"""Poison pills: a document whose processing keeps stopping the worker (out of memory, killed)
fails with the reason after RAG_MAX_ATTEMPTS runs and is never retried automatically.

A killed worker leaves its document `processing`, claimed by a process that no longer exists,
with the run counted; these tests set that state as a kill leaves it (test_worker.py kills a
real worker), then let the real redelivery, worker-start requeue and commands act on it.
"""

from __future__ import annotations

import io
import os
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from ingestion import pipeline, services
from ingestion.models import Chunk, Document
from ingestion.services import requeue_abandoned_documents
from tests.documents import write_markdown

pytestmark = pytest.mark.django_db

SECTIONS = [("Budget", "The Orion budget is 3 euros. " * 10)]
DEAD_PID = 999_999_999  # above pid_max: never a live process


def register(collection, tmp_path, name: str = "a.md") -> Document:
    path = write_markdown(tmp_path / name, name, SECTIONS)
    return services.register_path(collection, path, enqueue=False).document


def killed_mid_document(document: Document, runs: int) -> None:
    """The state a worker killed while processing `document` leaves behind, after `runs` runs
    that all died the same way."""
    host = pipeline.process_identity().split(":")[0]
    Document.objects.filter(pk=document.pk).update(
        status="processing",
        claimed_by=f"{host}:{DEAD_PID}",
        processing_started_at=timezone.now() - timedelta(seconds=5),
        attempts=runs,
        unfinished_runs=runs,
    )


def test_each_run_is_counted_until_it_finishes(tmp_path, collection):
    document = register(collection, tmp_path)

    result = pipeline.ingest(document.pk)

    document.refresh_from_db()
    assert result.status == "ready"
    assert document.attempts == 1
    assert document.unfinished_runs == 0
    assert document.claimed_by == ""


def test_a_redelivered_message_after_the_last_allowed_run_fails_the_document(
    tmp_path, collection, settings
):
    settings.RAG_MAX_ATTEMPTS = 3
    document = register(collection, tmp_path)
    killed_mid_document(document, runs=3)

    result = pipeline.ingest(document.pk)  # reject_on_worker_lost redelivers the message

    document.refresh_from_db()
    assert result.status == "failed" == document.status
    assert "stopped the worker 3 times: too large or malformed" in document.error
    assert document.attempts == 3  # not run a fourth time
    assert not Chunk.objects.filter(document=document).exists()

    again = pipeline.ingest(document.pk)  # and a further redelivery changes nothing
    document.refresh_from_db()
    assert again.status == "failed"
    assert document.attempts == 3
    assert "stopped the worker 3 times" in document.error


def test_below_the_limit_a_killed_run_is_redone(tmp_path, collection, settings):
    settings.RAG_MAX_ATTEMPTS = 3
    document = register(collection, tmp_path)
    killed_mid_document(document, runs=2)

    assert pipeline.ingest(document.pk).status == "ready"
    document.refresh_from_db()
    assert document.attempts == 3
    assert document.unfinished_runs == 0


def test_worker_start_fails_a_poisoned_document_and_requeues_the_others(
    tmp_path, collection, settings, task_queue, django_capture_on_commit_callbacks
):
    settings.RAG_MAX_ATTEMPTS = 3
    poisoned = register(collection, tmp_path, "poisoned.md")
    killed_once = register(collection, tmp_path, "once.md")
    killed_mid_document(poisoned, runs=3)
    killed_mid_document(killed_once, runs=1)

    with django_capture_on_commit_callbacks(execute=True):  # the real enqueue, on commit
        requeue_abandoned_documents()

    poisoned.refresh_from_db()
    killed_once.refresh_from_db()
    assert task_queue.document_ids() == [killed_once.pk]
    assert poisoned.status == "failed"
    assert "stopped the worker 3 times" in poisoned.error
    # The automatic requeue is no fresh start: the next kill counts as the second.
    assert killed_once.status == "queued"
    assert killed_once.unfinished_runs == 1


def test_reingest_stuck_skips_a_poisoned_document(
    tmp_path, collection, settings, task_queue, django_capture_on_commit_callbacks
):
    settings.RAG_MAX_ATTEMPTS = 3
    poisoned = register(collection, tmp_path)
    killed_mid_document(poisoned, runs=3)

    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("reingest", "--stuck", stdout=out)

    poisoned.refresh_from_db()
    assert task_queue.messages() == []
    assert "Queued 0 documents" in out.getvalue()
    assert poisoned.status == "failed"
    assert "stopped the worker 3 times" in poisoned.error


def test_a_manual_retry_gives_fresh_attempts(tmp_path, collection, settings):
    settings.RAG_MAX_ATTEMPTS = 3
    document = register(collection, tmp_path)
    killed_mid_document(document, runs=3)
    pipeline.ingest(document.pk)
    assert Document.objects.get(pk=document.pk).status == "failed"

    services.reingest([document])  # what Retry in the console, admin and API calls

    document.refresh_from_db()
    assert document.status == "queued"
    assert document.unfinished_runs == 0
    assert pipeline.ingest(document.pk).status == "ready"


def test_a_duplicate_message_leaves_a_document_another_live_process_works_on(tmp_path, collection):
    document = register(collection, tmp_path)
    host = pipeline.process_identity().split(":")[0]
    working = f"{host}:{os.getppid()}"  # a live process of this machine, not this one
    Document.objects.filter(pk=document.pk).update(
        status="processing",
        claimed_by=working,
        processing_started_at=timezone.now(),
        attempts=1,
        unfinished_runs=1,
    )

    result = pipeline.ingest(document.pk)

    document.refresh_from_db()
    assert result.status == "processing"
    assert document.claimed_by == working
    assert document.attempts == 1
    assert document.unfinished_runs == 1


def test_a_run_stopped_by_the_operator_does_not_count(tmp_path, collection):
    document = register(collection, tmp_path)
    killed_mid_document(document, runs=2)  # the second run was `make stop` giving up on it

    assert pipeline.forgive_interrupted_runs([DEAD_PID]) == 1

    document.refresh_from_db()
    assert document.unfinished_runs == 1
    assert document.status == "processing"
