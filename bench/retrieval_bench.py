"""Retrieval benchmark: search latency (p50/p95) at 10k and 100k synthetic chunks, and the
retrieval quality figures (hit@k, MRR, nDCG) on the dev evaluation set.

Run as `.venv/bin/python bench/retrieval_bench.py [--sizes 10000,100000] [--queries 200]`.
Synthetic chunks go into a scratch collection of the dev database and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from ingestion import embedding  # noqa: E402
from ingestion.models import Collection, Document  # noqa: E402
from retrieval import evaluation  # noqa: E402
from retrieval.search import search_collections  # noqa: E402

EVAL_DIR = Path(settings.BASE_DIR).parent / "shared" / "eval" / "dev"
SCRATCH = "bench: synthetic chunks"
EVAL_COLLECTION = "rag-eval scratch"
CHUNKS_PER_DOCUMENT = 100
NOISE = 0.6  # how far a synthetic vector strays from the real passage it is drawn around
FALLBACK_WORDS = [
    "file",
    "path",
    "read",
    "write",
    "open",
    "close",
    "socket",
    "server",
    "client",
    "request",
    "response",
    "thread",
    "process",
    "queue",
    "lock",
    "event",
    "timer",
    "signal",
    "handler",
    "logger",
    "record",
    "format",
    "parse",
    "encode",
    "decode",
    "buffer",
    "stream",
    "byte",
    "string",
    "integer",
    "float",
    "list",
    "dict",
    "tuple",
    "set",
    "key",
    "value",
    "index",
    "slice",
    "iterator",
    "generator",
    "function",
    "method",
    "class",
    "object",
    "attribute",
    "module",
    "package",
    "import",
    "error",
    "exception",
    "raise",
    "return",
    "default",
    "argument",
    "parameter",
    "option",
    "flag",
    "version",
    "deprecated",
    "example",
    "note",
]


def vocabulary() -> list[str]:
    """Words in realistic proportions: the dev corpus's own, else a fixed technical list."""
    corpus = EVAL_DIR / "corpus"
    if not corpus.is_dir():
        return FALLBACK_WORDS
    counts: dict[str, int] = {}
    for page in sorted(corpus.glob("*.html"))[:40]:
        text = re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8", errors="ignore"))
        for word in re.findall(r"[A-Za-z_][A-Za-z_]{2,}", text):
            counts[word.lower()] = counts.get(word.lower(), 0) + 1
    return [w for w, _ in sorted(counts.items(), key=lambda item: -item[1])[:20000]]


def real_embeddings(exclude: Collection, limit: int = 5000) -> np.ndarray:
    """Embeddings of real passages already stored (any collection), to scatter synthetic
    vectors around; empty when the database holds none."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.embedding::text FROM ingestion_chunk c JOIN ingestion_document d"
            " ON d.id = c.document_id WHERE d.collection_id <> %s LIMIT %s",
            [exclude.pk, limit],
        )
        rows = [np.array(row[0].strip("[]").split(","), dtype=np.float32) for row in cursor]
    return np.stack(rows) if rows else np.zeros((0, settings.RAG_EMBEDDING_DIM), np.float32)


def add_synthetic_chunks(collection: Collection, count: int, words: list[str], rng) -> None:
    """`count` more chunks: Zipf-distributed words (like real text) and random unit vectors."""
    dim = settings.RAG_EMBEDDING_DIM
    weights = 1.0 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    documents = count // CHUNKS_PER_DOCUMENT
    seeds = real_embeddings(collection)
    with transaction.atomic():
        created = Document.objects.bulk_create(
            [
                Document(
                    collection=collection,
                    original_name=f"synthetic-{uuid.uuid4().hex[:8]}.txt",
                    title=" ".join(rng.choice(words, 4, p=weights)).capitalize(),
                    content_type="text/plain",
                    size=0,
                    sha256=uuid.uuid4().hex + uuid.uuid4().hex,
                    status=Document.Status.READY,
                    chunk_count=CHUNKS_PER_DOCUMENT,
                )
                for _ in range(documents)
            ]
        )
        with (
            connection.cursor() as cursor,
            cursor.copy(
                "COPY ingestion_chunk (document_id, ordinal, text, title, heading, token_count,"
                " embedding) FROM STDIN"
            ) as copy,
        ):
            for document in created:
                vectors = rng.standard_normal((CHUNKS_PER_DOCUMENT, dim)).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                if len(seeds):
                    # Near real passages, so queries meet them where real chunks would be.
                    base = seeds[rng.integers(0, len(seeds), CHUNKS_PER_DOCUMENT)]
                    vectors = base + NOISE * vectors
                    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                lengths = rng.integers(60, 160, CHUNKS_PER_DOCUMENT)
                for ordinal in range(CHUNKS_PER_DOCUMENT):
                    text = " ".join(rng.choice(words, lengths[ordinal], p=weights))
                    heading = " ".join(rng.choice(words, 3, p=weights))
                    vector = "[" + ",".join(f"{x:.6f}" for x in vectors[ordinal]) + "]"
                    copy.write_row(
                        (
                            document.pk,
                            ordinal,
                            text,
                            document.title,
                            heading,
                            int(lengths[ordinal]),
                            vector,
                        )
                    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ingestion_document, ingestion_chunk")


def remove_collection(collection: Collection) -> None:
    # Chunks go by SQL: the ORM's cascade would load every row to null citation links first.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM ingestion_chunk WHERE document_id IN "
            "(SELECT id FROM ingestion_document WHERE collection_id = %s)",
            [collection.pk],
        )
        cursor.execute("DELETE FROM ingestion_document WHERE collection_id = %s", [collection.pk])
        collection.delete()
    # Dead rows left in the HNSW graph slow every later search and cost it recall: clean now.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE ingestion_chunk")


def queries(count: int) -> list[str]:
    questions: list[str] = []
    for name in ("questions.jsonl", "questions-hard.jsonl"):
        path = EVAL_DIR / name
        if path.is_file():
            questions += [q.question for q in evaluation.load_questions(path)]
    if not questions:
        questions = [f"How do I {a} a {b}?" for a in FALLBACK_WORDS[:20] for b in FALLBACK_WORDS]
    return [questions[i % len(questions)] for i in range(count)]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(round(fraction * (len(ordered) - 1)), len(ordered) - 1)]


def measure(collection_ids: list[int], texts: list[str], mode: str) -> list[float]:
    search_collections(collection_ids, texts[0], 8, mode)  # warm caches and the model
    timings = []
    for text in texts:
        started = time.perf_counter()
        search_collections(collection_ids, text, 8, mode)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def latency(sizes: list[int], query_count: int, modes: list[str]) -> None:
    rng = np.random.default_rng(42)
    words = vocabulary()
    texts = queries(query_count)
    embedding.embed_query(texts[0])
    started = time.perf_counter()
    for text in texts:
        embedding.embed_query(text)
    embed_ms = (time.perf_counter() - started) * 1000 / len(texts)
    print(f"query embedding alone: {embed_ms:.1f} ms mean ({embedding.get_model().device})")

    stale = Collection.objects.filter(name=SCRATCH).first()
    if stale:
        remove_collection(stale)
    collection = Collection.objects.create(name=SCRATCH)
    try:
        present = 0
        for size in sorted(sizes):
            started = time.perf_counter()
            add_synthetic_chunks(collection, size - present, words, rng)
            present = size
            print(f"{size:>7} chunks (loaded in {time.perf_counter() - started:.0f}s)")
            for mode in modes:
                timings = measure([collection.pk], texts, mode)
                print(
                    f"  {mode:<7} p50 {percentile(timings, 0.50):7.1f} ms   "
                    f"p95 {percentile(timings, 0.95):7.1f} ms   over {len(timings)} queries"
                )
    finally:
        remove_collection(collection)


def quality() -> None:
    if not (EVAL_DIR / "corpus").is_dir():
        print(f"dev eval set not found at {EVAL_DIR}; quality skipped")
        return
    started = time.perf_counter()
    loaded = evaluation.ingest_corpus(EVAL_DIR / "corpus", EVAL_COLLECTION)
    print(
        f"dev corpus: {loaded.documents} documents in {EVAL_COLLECTION!r} "
        f"({loaded.ingested} ingested now, {time.perf_counter() - started:.0f}s)"
    )
    for name in ("questions.jsonl", "questions-hard.jsonl"):
        report = evaluation.run_questions(
            evaluation.load_questions(EVAL_DIR / name), [loaded.collection.pk]
        )
        print(f"{name}:  mode     hit@1  hit@5  MRR@10  nDCG@10")
        for mode, m in report.metrics.items():
            print(
                f"{'':{len(name) + 3}}{mode:<8} {m.hit_at_1:.3f}  {m.hit_at_5:.3f}  "
                f"{m.mrr_at_10:.3f}   {m.ndcg_at_10:.3f}"
            )
        for label, stats in (
            ("answerable", report.answerable_similarity),
            ("unanswerable", report.unanswerable_similarity),
        ):
            if stats and stats.count:
                print(
                    f"{'':{len(name) + 3}}top-1 similarity, {label}: mean {stats.mean:.3f} "
                    f"max {stats.max:.3f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="10000",
        help="chunk counts, comma separated; 10000,100000 adds the large point (~6 min to load)",
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--modes", default="hybrid", help="hybrid,vector,fts")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    # Quality first: it must not run against an index still full of the synthetic rows' ghosts.
    print("== retrieval quality (dev set) ==")
    if not args.skip_quality:
        quality()
    print("== retrieval latency ==")
    if not args.skip_latency:
        latency(
            [int(s) for s in args.sizes.split(",") if s.strip()],
            args.queries,
            [m.strip() for m in args.modes.split(",") if m.strip()],
        )


if __name__ == "__main__":
    main()
