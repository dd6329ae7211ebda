"""The ingestion task in a real Celery worker process, over the folder queue and over Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from django.db import transaction

from ingestion import services
from ingestion.models import Chunk, Document
from ragsite.celery import app
from tests.conftest import ROOT, database_url, make_collection, start_worker, stop_worker
from tests.documents import write_html, write_markdown

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def register(collection, path) -> int:
    with transaction.atomic():  # the task is sent when this commits
        return services.register_path(collection, path).document.pk


def test_worker_ingests_uploads_and_a_bad_file_fails_alone(tmp_path, worker):
    collection = make_collection("Worker")
    good_md = write_markdown(
        tmp_path / "good.md", "Orion", [("Budget", "The Orion budget is 7 euros.")]
    )
    good_html = write_html(tmp_path / "good.html", "Lyra", [("Plan", "Lyra ships in May.")])
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4 not really a pdf")

    ids = [register(collection, p) for p in (good_md, bad, good_html)]
    documents = {d.pk: d for d in worker.wait_for(ids)}

    assert documents[ids[0]].status == "ready"
    assert documents[ids[0]].chunk_count > 0
    assert documents[ids[2]].status == "ready"
    assert documents[ids[1]].status == "failed"
    assert "damaged" in documents[ids[1]].error
    assert Chunk.objects.filter(document_id=ids[0], text__contains="7 euros").exists()


def test_retry_through_the_worker_is_idempotent(tmp_path, worker):
    collection = make_collection("Retry")
    doc_id = register(
        collection, write_markdown(tmp_path / "r.md", "Retry", [("A", "Alpha text. " * 80)])
    )
    first = worker.wait_for([doc_id])[0]

    with transaction.atomic():
        services.reingest([first])
    Document.objects.filter(pk=doc_id).update(status="queued")  # wait_for waits for a change
    again = worker.wait_for([doc_id])[0]

    assert again.status == "ready"
    assert (
        again.chunk_count == first.chunk_count == Chunk.objects.filter(document_id=doc_id).count()
    )


@pytest.fixture
def private_queue(celery_queue):
    """A queue only this test's workers consume, so the session worker cannot take the task."""
    original = app.conf.task_default_queue
    queue = f"ragsite-kill-{uuid.uuid4().hex[:8]}"
    app.conf.task_default_queue = queue
    yield {
        **celery_queue,
        "queue": queue,
        "env": {**celery_queue["env"], "RAG_CELERY_QUEUE": queue},
    }
    app.conf.task_default_queue = original


def test_a_worker_killed_mid_document_leaves_it_to_be_redone(tmp_path, private_queue):
    collection = make_collection("Killed")
    long_text = "\n\n".join(
        f"Paragraph {i} talks about subject {i} at some length. " * 6 for i in range(1500)
    )
    path = tmp_path / "long.txt"
    path.write_text(long_text)

    first = start_worker(private_queue, tmp_path / "first.log")
    try:
        doc_id = register(collection, path)
        deadline = time.monotonic() + 120
        while Document.objects.get(pk=doc_id).status != "processing":
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-2000:]
            time.sleep(0.2)
        # Killed as soon as it started: no sleep first, after which the document might be done
        # on a fast machine (its chunks are stored in one transaction at the end anyway).
    finally:
        stop_worker(first, signal.SIGKILL)
    assert Document.objects.get(pk=doc_id).status == "processing"  # killed mid-document

    second = start_worker(private_queue, tmp_path / "second.log")
    try:
        deadline = time.monotonic() + 240
        while (document := Document.objects.get(pk=doc_id)).status != "ready":
            assert time.monotonic() < deadline, (tmp_path / "second.log").read_text()[-2000:]
            time.sleep(0.5)
    finally:
        stop_worker(second)
    assert document.chunk_count == Chunk.objects.filter(document_id=doc_id).count() > 100
    ordinals = list(Chunk.objects.filter(document_id=doc_id).values_list("ordinal", flat=True))
    assert sorted(ordinals) == list(range(len(ordinals)))


def test_a_document_that_keeps_killing_the_worker_fails_and_is_not_retried(tmp_path, private_queue):
    """RAG_MAX_ATTEMPTS=1: the first run that dies with its worker is the last."""
    queue = {**private_queue, "env": {**private_queue["env"], "RAG_MAX_ATTEMPTS": "1"}}
    collection = make_collection("Poison")
    path = tmp_path / "long.txt"
    path.write_text(
        "\n\n".join(f"Paragraph {i} is about subject {i} at length. " * 6 for i in range(1500))
    )

    first = start_worker(queue, tmp_path / "first.log")
    try:
        doc_id = register(collection, path)
        deadline = time.monotonic() + 120
        while Document.objects.get(pk=doc_id).status != "processing":
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-2000:]
            time.sleep(0.2)
    finally:
        stop_worker(first, signal.SIGKILL)  # as the out-of-memory killer would
    assert Document.objects.get(pk=doc_id).status == "processing"

    second = start_worker(queue, tmp_path / "second.log")
    try:
        deadline = time.monotonic() + 120
        while (document := Document.objects.get(pk=doc_id)).status == "processing":
            assert time.monotonic() < deadline, (tmp_path / "second.log").read_text()[-2000:]
            time.sleep(0.3)
    finally:
        stop_worker(second)
    assert document.status == "failed"
    assert "stopped the worker 1 time: too large or malformed" in document.error
    assert document.attempts == 1  # never run again
    assert not Chunk.objects.filter(document_id=doc_id).exists()


def wait_until_done(document_id: int, log, timeout: float = 120) -> Document:
    """The document once it is no longer queued or processing; bounded, with the worker's log."""
    deadline = time.monotonic() + timeout
    while (document := Document.objects.get(pk=document_id)).status in {"queued", "processing"}:
        assert time.monotonic() < deadline, f"still {document.status}:\n{log.read_text()[-12000:]}"
        time.sleep(0.3)
    return document


def test_a_worker_without_its_embedding_model_fails_documents_with_the_reason(
    tmp_path, private_queue
):
    env = {**private_queue["env"], "RAG_EMBEDDING_MODEL": str(tmp_path / "no-such-model")}
    collection = make_collection("No model")
    path = write_markdown(tmp_path / "a.md", "Orion", [("Budget", "The budget is 7 euros.")])

    worker = start_worker({**private_queue, "env": env}, tmp_path / "worker.log")
    try:
        document = wait_until_done(register(collection, path), tmp_path / "worker.log")
    finally:
        stop_worker(worker)

    assert document.status == "failed"
    assert document.error.startswith("Unexpected error (EmbeddingModelError)")
    assert "no-such-model" in document.error


def start_prefork_worker(celery_queue: dict, log) -> subprocess.Popen:
    """conftest's worker with a prefork pool: the solo pool enforces no time limits."""
    env = {
        **os.environ,
        **celery_queue["env"],
        "DATABASE_URL": database_url(),
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "celery", "-A", "ragsite", "worker", "--pool=prefork"]
    command += ["--concurrency=1", "--loglevel=INFO", "-Q", celery_queue["queue"]]
    command += ["-n", f"{celery_queue['queue']}@%h", "--without-mingle", "--without-gossip"]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_the_time_limit_fails_the_document_with_the_reason(tmp_path, private_queue):
    """A prefork worker (the solo pool enforces no limits), the task sent with a 1 s soft and
    2 s hard limit: the soft limit interrupts the pipeline, which lets it through to the task
    (not an "Unexpected error"), and the document fails with the reason."""
    from ingestion.tasks import ingest_document

    collection = make_collection("Slow")
    path = tmp_path / "long.txt"
    path.write_text(
        "\n\n".join(f"Paragraph {i} is about subject {i} at length. " * 6 for i in range(3000))
    )
    log = tmp_path / "worker.log"
    worker = start_prefork_worker(private_queue, log)
    try:
        document_id = services.register_path(collection, path, enqueue=False).document.pk
        # The limits travel in the message (from the sender's settings, normally).
        ingest_document.apply_async(args=[document_id], time_limit=2, soft_time_limit=1)
        document = wait_until_done(document_id, log)
    finally:
        stop_worker(worker)

    assert document.status == "failed", document.error
    assert document.error.startswith("Processing took longer than the time limit")
    assert not Chunk.objects.filter(document=document).exists()
