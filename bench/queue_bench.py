"""Ingestion through the default queue and a real worker, next to the same documents ingested
in-process: the ratio is what the queue (kombu's folder transport, its polling, prefetch and the
per-document hand-over) costs on top of the work itself. Side by side in one run:

- in-process: pipeline.ingest of each document, one after another (no queue at all);
- worker, folder queue polled every 1 s (kombu's default, what ragsite used before);
- worker, folder queue polled every RAG_BROKER_POLL_SECONDS (0.1 s by default now);
- the same with two worker processes (parsing of one document overlaps the embedding of another).

Each worker is started and warmed up (its embedding model loaded by a first document) before the
clock starts; the clock stops when the last document is ready. Corpus: the dev set's HTML pages.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
# One folder queue of our own for the whole run, so no running `make run` worker takes our tasks.
BROKER = Path(tempfile.mkdtemp(prefix="ragsite-queue-bench-"))
QUEUE = f"ragsite-bench-{uuid.uuid4().hex[:8]}"
os.environ["CELERY_BROKER_URL"] = "filesystem://"
os.environ["RAG_BROKER_DIR"] = str(BROKER)
os.environ["RAG_CELERY_QUEUE"] = QUEUE

import django  # noqa: E402

from ragsite import bootstrap  # noqa: E402

bootstrap.prepare()  # the embedded database, as every entry point starts it
django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402

from ingestion import embedding, pipeline, services  # noqa: E402
from ingestion.models import Collection, Document  # noqa: E402

CORPUS = ROOT.parent / "shared" / "eval" / "dev" / "corpus"


def in_process(files: list[Path]) -> tuple[float, int]:
    collection = Collection.objects.create(name=f"bench-inproc-{time.time_ns()}")
    try:
        embedding.get_model()
        started = time.perf_counter()
        for path in files:
            pipeline.ingest(services.register_path(collection, path, enqueue=False).document.pk)
        seconds = time.perf_counter() - started
        return seconds, _chunks(collection)
    finally:
        _delete(collection)


def through_worker(files: list[Path], warm_up: Path, poll: float, processes: int) -> tuple:
    log = BROKER / f"worker-{poll}-{processes}.log"
    env = {**os.environ, "RAG_BROKER_POLL_SECONDS": str(poll)}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "ragsite",
            "worker",
            f"--concurrency={processes}",
            "--loglevel=INFO",
            f"--hostname=bench-{uuid.uuid4().hex[:6]}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    collection = Collection.objects.create(name=f"bench-worker-{time.time_ns()}")
    try:
        # Warm-up: every worker process loads its embedding model on its first document.
        warm = [
            _send(collection, [warm_up.with_name(f"{n}-{warm_up.name}")]) for n in range(processes)
        ]
        _wait([pk for batch in warm for pk in batch], worker, log, timeout=600)
        started = time.perf_counter()
        ids = _send(collection, files)
        _wait(ids, worker, log, timeout=3600)
        seconds = time.perf_counter() - started
        return seconds, _chunks(collection, exclude=[pk for batch in warm for pk in batch])
    finally:
        worker.terminate()
        worker.wait(60)
        _delete(collection)


def _send(collection: Collection, files: list[Path]) -> list[int]:
    with transaction.atomic():  # all sent when this commits, as an upload of a batch does
        return [services.register_path(collection, path).document.pk for path in files]


def _wait(ids: list[int], worker: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    open_states = [Document.Status.QUEUED, Document.Status.PROCESSING]
    while Document.objects.filter(pk__in=ids, status__in=open_states).exists():
        if worker.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the worker stopped or took too long:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def _chunks(collection: Collection, exclude: list[int] | None = None) -> int:
    documents = collection.documents.exclude(pk__in=exclude or [])
    return sum(documents.values_list("chunk_count", flat=True))


def _delete(collection: Collection) -> None:
    for document in collection.documents.all():
        services.delete_document(document)
    collection.delete()


def main() -> None:
    # A bench stopped from outside (timeout, Ctrl-C) still stops its worker: `finally` runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=int, default=60, help="HTML pages to ingest")
    args, _ = parser.parse_known_args()  # bench/run.py passes every benchmark the same arguments
    pages = sorted(CORPUS.glob("*.html"))
    if not pages:
        sys.exit(f"no corpus at {CORPUS}")
    files = pages[: args.html]
    call_command("migrate", interactive=False, verbosity=0)  # a data dir never served yet
    with tempfile.TemporaryDirectory() as folder:
        warm_up = Path(folder) / "warm-up.md"
        for n in range(2):
            warm_up.with_name(f"{n}-warm-up.md").write_text(f"# Warm-up {n}\n\nLoads the model.\n")
        print(
            f"queue benchmark: {os.cpu_count()} CPUs, {len(files)} HTML pages, folder queue "
            f"(now polled every {settings.BROKER_POLL_SECONDS} s)",
            flush=True,
        )
        seconds, chunks = in_process(files)
        base = chunks / seconds
        print(
            f"{'in-process, no queue':<38} {seconds:6.1f}s {chunks:>5} chunks {base:6.1f} chunks/s",
            flush=True,
        )
        for label, poll, processes in [
            ("worker, poll 1 s (before), 1 process", 1.0, 1),
            (
                f"worker, poll {settings.BROKER_POLL_SECONDS} s, 1 process",
                settings.BROKER_POLL_SECONDS,
                1,
            ),
            (
                f"worker, poll {settings.BROKER_POLL_SECONDS} s, 2 processes",
                settings.BROKER_POLL_SECONDS,
                2,
            ),
        ]:
            seconds, chunks = through_worker(files, warm_up, poll, processes)
            rate = chunks / seconds
            print(
                f"{label:<38} {seconds:6.1f}s {chunks:>5} chunks {rate:6.1f} chunks/s"
                f"  = {rate / base:.2f}x in-process, {len(files) / seconds:.2f} docs/s",
                flush=True,
            )


if __name__ == "__main__":
    main()
