"""Every Prometheus metric of ragsite, defined once, and the registry /metrics serves them from.

Counters and histograms are recorded where the work happens (ingestion.pipeline, retrieval's
search wrapper and answer receiver, retrieval.llm) and read by ragsite.ops at /metrics. Figures
that are a state rather than an event (documents by state, queue length) are computed at scrape
time by ragsite.ops and are not defined here.

Several processes record (uvicorn workers, the Celery worker's pool): in prometheus_client's
multiprocess mode each writes its values to files under PROMETHEUS_MULTIPROC_DIR, which
ragsite.bootstrap.prepare() sets (DATA_DIR/metrics/<host name>) before this module is imported,
and /metrics merges the files of every process (`registry`). Only counters and histograms live
there: they add up across processes, dead ones included, so totals never go backwards. So that
the folder does not grow with every process ever started, `compact` folds the files of this
host's exited processes into one archive file per type (bootstrap calls it as a process starts).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

ENV = "PROMETHEUS_MULTIPROC_DIR"
NAMESPACE = "ragsite"

# Seconds: from a few milliseconds (a keyword search) to minutes (a long model answer, a big file).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800)
RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

INGESTION_STAGE_SECONDS = Histogram(
    "ingestion_stage_seconds",
    "Seconds one document spent in an ingestion stage (parse, chunk, embed, store).",
    ["stage"],
    namespace=NAMESPACE,
    buckets=STAGE_BUCKETS,
)
INGESTION_CHUNKS_PER_SECOND = Histogram(
    "ingestion_chunks_per_second",
    "Chunks per second of one ingested document, over its whole processing.",
    namespace=NAMESPACE,
    buckets=RATE_BUCKETS,
)
INGESTED_CHUNKS = Counter(
    "ingestion_chunks",
    "Chunks stored by ingestion (rate() of it: chunks per second over all workers).",
    namespace=NAMESPACE,
)
INGESTED_DOCUMENTS = Counter(
    "ingestion_documents",
    "Documents ingestion finished, by result (ready, failed).",
    ["result"],
    namespace=NAMESPACE,
)
SEARCH_SECONDS = Histogram(
    "search_seconds",
    "Seconds one permission-filtered search took, by entry point (web, api, mcp, answer).",
    ["via"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
)
ANSWER_SECONDS = Histogram(
    "answer_seconds",
    "Seconds from question to stored answer, by outcome.",
    ["outcome"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
)
ANSWERS = Counter(
    "answers",
    "Answers stored, by outcome (answered, no_answer, model_unavailable, error) and generator "
    "(extractive, openai).",
    ["outcome", "generator"],
    namespace=NAMESPACE,
)
MODEL_ERRORS = Counter(
    "model_errors",
    "Failed calls to a model endpoint (llm, embedding, reranker), after the client's retries.",
    ["endpoint"],
    namespace=NAMESPACE,
)


def model_error(endpoint: str) -> None:
    """Count one failed call to `endpoint` (llm, embedding or reranker)."""
    MODEL_ERRORS.labels(endpoint=endpoint).inc()


def multiprocess() -> bool:
    """Whether this process records into files (prometheus_client decided when first imported:
    PROMETHEUS_MULTIPROC_DIR was set then) rather than in its own memory."""
    return values.ValueClass is not values.MutexValue


def metric_files(root: Path) -> list[str]:
    """The value files of every process under `root`: its own *.db files and those of its
    sub-folders (one per host sharing the data dir: the web and worker containers)."""
    return sorted(str(p) for p in [*root.glob("*.db"), *root.glob("*/*.db")])


class SharedFilesCollector(MultiProcessCollector):
    """prometheus_client's multiprocess collector over the files of every host folder under
    `root`, not of one folder only. Values of the same series add up (counters, histograms)."""

    def __init__(self, root: Path, registry: CollectorRegistry | None = None):
        self.root = root
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterable:
        return self.merge(metric_files(self.root), accumulate=True)


def registry(root: Path | None) -> CollectorRegistry:
    """What /metrics serves: in multiprocess mode a fresh registry reading every process's files
    under `root` (the folder above this host's PROMETHEUS_MULTIPROC_DIR); else this process's own
    default registry."""
    if not multiprocess() or root is None:
        from prometheus_client import REGISTRY

        return REGISTRY
    fresh = CollectorRegistry()
    SharedFilesCollector(root, fresh)
    return fresh


def this_process_dir() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


COMPACTED_TYPES = ("counter", "histogram")  # core.metrics defines no gauges kept in files


def _pid(path: Path) -> int | None:
    last = path.stem.rpartition("_")[2]
    return int(last) if last.isdigit() else None


def compact(folder: Path) -> int:
    """Fold the value files of exited processes in `folder` (one host's: process ids are only
    meaningful there) into `<type>_archive.db`, keeping every total; returns how many files
    went. Serialised by a lock file, so processes starting together take turns. A scrape in the
    instant between the archive's replacement and the removals may count those files twice."""
    import psutil

    with open(folder / ".compact.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = 0
        for kind in COMPACTED_TYPES:
            dead = [
                path
                for path in folder.glob(f"{kind}_*.db")
                if (pid := _pid(path)) is not None and not psutil.pid_exists(pid)
            ]
            if not dead:
                continue
            archive = folder / f"{kind}_archive.db"
            sources = [str(p) for p in ([archive] if archive.exists() else []) + dead]
            draft = folder / f".{kind}_archive.tmp"
            draft.unlink(missing_ok=True)
            values_file = MmapedDict(str(draft))
            for metric in MultiProcessCollector.merge(sources, accumulate=False):
                for sample in metric.samples:
                    key = mmap_key(
                        metric.name,
                        sample.name,
                        list(sample.labels),
                        list(sample.labels.values()),
                        metric.documentation,
                    )
                    values_file.write_value(key, sample.value, 0.0)
            values_file.close()
            os.replace(draft, archive)
            for path in dead:
                path.unlink(missing_ok=True)
            merged += len(dead)
        return merged
