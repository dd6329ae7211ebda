"""Two Celery worker processes on one Redis queue, as on two machines: a batch of documents is
shared between them, and each document is processed exactly once (none twice, none lost)."""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction

from ingestion import embedding, services
from ingestion.chunking import chunk_document
from ingestion.models import Chunk, Document
from ingestion.parsing import parse
from ragsite.celery import app
from tests.conftest import (
    REDIS_URL,
    _reset_connections,
    make_collection,
    redis_available,
    required,
    start_worker,
    stop_worker,
)
from tests.documents import write_markdown

pytestmark = [
    pytest.mark.worker,  # two worker processes: `make test-fast` leaves this out
    required(redis_available(), "no Redis on 127.0.0.1:6379"),
    pytest.mark.django_db(transaction=True),
]

DOCUMENTS = 12
READY_LINE = re.compile(r"document (\d+) ready: (\d+) chunks")


@pytest.fixture
def redis_queue(task_queue) -> Iterator[dict]:
    """A queue of its own on the local Redis, which this process sends to and the two workers
    consume (after the autouse folder queue, which it replaces for this test and puts back)."""
    queue = f"ragsite-two-{uuid.uuid4().hex[:8]}"
    saved = {
        key: app.conf[key]
        for key in ("broker_url", "broker_transport_options", "task_default_queue")
    }
    app.conf.broker_url = REDIS_URL
    app.conf.broker_transport_options = {"visibility_timeout": 60}
    app.conf.task_default_queue = queue
    _reset_connections(app)
    env = {
        "CELERY_BROKER_URL": REDIS_URL,
        "RAG_CELERY_QUEUE": queue,
        "RAG_MEDIA_ROOT": str(settings.MEDIA_ROOT),
    }
    yield {"broker": "redis", "env": env, "queue": queue}
    for key, value in saved.items():
        app.conf[key] = value
    _reset_connections(app)


def wait_for_line(log: Path, pattern: str, process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pattern not in (log.read_text() if log.exists() else ""):
        assert process.poll() is None, f"worker died:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {pattern!r} in {timeout}s:\n{log.read_text()}"
        time.sleep(0.3)


def one_ingest_chunk_count(path: Path) -> int:
    """What a single ingest of this file produces: the pipeline's own parse and chunking."""
    drafts = chunk_document(
        parse(path, "text/markdown"),
        count_tokens=embedding.count_tokens,
        max_tokens=settings.RAG_CHUNK_TOKENS,
        overlap_tokens=settings.RAG_CHUNK_OVERLAP,
        model_max_tokens=embedding.max_tokens(),
    )
    return len(drafts)


def test_two_workers_share_a_batch_and_process_each_document_exactly_once(tmp_path, redis_queue):
    import redis

    collection = make_collection("Two workers")
    paths = [
        write_markdown(
            tmp_path / f"project-{n}.md",
            f"Project {n}",
            [
                (f"Part {part}", f"Project {n} part {part} costs {n * 10 + part} euros. " * 40)
                for part in range(3)
            ],
        )
        for n in range(DOCUMENTS)
    ]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    workers = [start_worker(redis_queue, log) for log in logs]
    try:
        # Computed while the workers start: what one ingest of each file gives.
        expected = {path.name: one_ingest_chunk_count(path) for path in paths}
        for process, log in zip(workers, logs, strict=True):
            wait_for_line(log, " ready.", process, timeout=180)  # both consume before any is sent

        with transaction.atomic():  # all twelve tasks are sent when this commits
            ids = [services.register_path(collection, path).document.pk for path in paths]

        deadline = time.monotonic() + 300
        while Document.objects.filter(pk__in=ids, status__in=["queued", "processing"]).exists():
            for process, log in zip(workers, logs, strict=True):
                assert process.poll() is None, f"worker died:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "\n".join(log.read_text()[-3000:] for log in logs)
            time.sleep(0.3)
    finally:
        for process in workers:
            stop_worker(process)

    texts = [log.read_text() for log in logs]
    done_by = [[int(m.group(1)) for m in READY_LINE.finditer(text)] for text in texts]
    runs = Counter(document_id for worker_ids in done_by for document_id in worker_ids)
    assert runs == Counter(ids), f"each document once, by one worker: {done_by}"
    assert all(done_by), f"both workers took part: {done_by}"

    for document in Document.objects.filter(pk__in=ids):
        assert document.status == "ready", document.error
        assert document.attempts == 1  # claimed once: no second run, not even a no-op claim
        assert document.unfinished_runs == 0
        assert document.claimed_by == ""
        ordinals = list(Chunk.objects.filter(document=document).values_list("ordinal", flat=True))
        assert sorted(ordinals) == list(range(len(ordinals)))  # no duplicates, no gaps
        assert len(ordinals) == document.chunk_count == expected[document.original_name] > 1

    # Nothing left behind on the broker: no message waiting, none delivered and unacknowledged.
    client = redis.Redis.from_url(REDIS_URL)
    assert client.llen(redis_queue["queue"]) == 0
    assert client.hlen("unacked") == 0 or not any(
        redis_queue["queue"].encode() in value for value in client.hvals("unacked")
    )
