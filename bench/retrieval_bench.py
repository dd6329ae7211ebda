"""Retrieval benchmark: search latency (p50/p95 of hybrid, vector and full text, and the query
embedding alone) at 100k synthetic chunks (and 1M with --million), and the retrieval quality
figures (hit@k, MRR, nDCG) on the dev evaluation set.

Run as `.venv/bin/python bench/retrieval_bench.py [--million] [--queries 200] [--compare]`.
--compare also times the previous full-text statement (per-query document-frequency counts,
every match ranked) on the same data, and reports how much of its full-text top 8 the current
one keeps, and runs the dev set's questions (search and answers) through both statements on the same
ingested corpus. EXPLAIN ANALYZE of the hybrid statement is printed at the --explain sizes. Synthetic
chunks go into a scratch collection of the dev database and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")

import django  # noqa: E402

from ragsite import bootstrap  # noqa: E402

bootstrap.prepare()  # the embedded database, as every entry point starts it
django.setup()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from ingestion import embedding  # noqa: E402
from ingestion.models import Collection, Document  # noqa: E402
from retrieval import evaluation  # noqa: E402
from retrieval import search as search_module  # noqa: E402
from retrieval.search import search_collections  # noqa: E402

EVAL_DIR = Path(settings.BASE_DIR).parent / "shared" / "eval" / "dev"
SCRATCH = "bench: synthetic chunks"
EVAL_COLLECTION = "rag-eval scratch"
CHUNKS_PER_DOCUMENT = 100
LOAD_BATCH = 20_000  # chunks per transaction while loading (the statistics trigger's unit)
BULK_LOAD = 300_000  # chunks loaded at once from which the indexes are built after the load
BULK_INDEXES = ("chunk_embedding_hnsw", "chunk_search_vector_gin")
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
    """`count` more chunks: Zipf-distributed words (like real text) and random unit vectors,
    LOAD_BATCH to a transaction. A large load builds the passage indexes afterwards instead of
    row by row, as pgvector advises for bulk loads (the 1M point: hours otherwise on 2 cores)."""
    seeds = real_embeddings(collection)
    with rebuilt_indexes(count >= BULK_LOAD):
        for start in range(0, count, LOAD_BATCH):
            _add_batch(collection, min(LOAD_BATCH, count - start), words, rng, seeds)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ingestion_document, ingestion_chunk, ingestion_termstatistic")


@contextmanager
def rebuilt_indexes(bulk: bool) -> Iterator[None]:
    """With `bulk`, the chunk table's vector and full-text indexes are dropped for the load and
    built again from their own definitions afterwards, with parallel maintenance workers and
    enough memory for an in-memory HNSW build; the build time is printed. Rebuilt even when the
    load fails, so the database is never left without them."""
    if not bulk:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'ingestion_chunk'"
            " AND indexname = ANY(%s)",
            [list(BULK_INDEXES)],
        )
        definitions = cursor.fetchall()
        for name, _ in definitions:
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '4GB'")
            cursor.execute(f"SET max_parallel_maintenance_workers = {os.cpu_count() or 1}")
            for name, definition in definitions:
                started = time.perf_counter()
                cursor.execute(definition)
                print(f"  index {name} built in {time.perf_counter() - started:.0f}s")
            cursor.execute("RESET maintenance_work_mem")
            cursor.execute("RESET max_parallel_maintenance_workers")


def _add_batch(collection: Collection, count: int, words: list[str], rng, seeds) -> None:
    dim = settings.RAG_EMBEDDING_DIM
    weights = 1.0 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    documents = count // CHUNKS_PER_DOCUMENT
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
                " embedding, page_boxes) FROM STDIN"
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
                            "[]",  # no PDF boxes
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


# The full-text part of the search statement before the term statistics (commit b49d115): each
# query counted every word's document frequency over the readable passages (up to 5% of them)
# and ranked every passage with an uncommon word. --compare times it on the same data.
LEGACY_TEXT_CTES = """corpus AS (
    SELECT greatest(sum(d.chunk_count), 1) AS chunks,
           -- A word in more passages than this is "common" (cf. Lucene's cutoff_frequency).
           greatest(ceil(sum(d.chunk_count) * %(common_fraction)s), %(common_minimum)s) AS common
    FROM ingestion_document d
    WHERE d.status = 'ready' AND d.collection_id = ANY(%(collections)s)
),
terms AS ({_TERMS_SQL}),
weighted_terms AS (
    -- Each word weighted by BM25's inverse document frequency over the passages the caller may
    -- read: a word found everywhere ("use", "function") says little, a rare one ("deepcopy") a
    -- lot. Counting stops at the common threshold: a frequent word costs no more rows than that.
    SELECT t.q, df.n >= corpus.common AS common,
           ln(1 + (corpus.chunks - df.n + 0.5) / (df.n + 0.5)) AS idf
    FROM terms t
    CROSS JOIN corpus
    CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM (
            SELECT 1 FROM ingestion_chunk c
            JOIN ingestion_document d ON d.id = c.document_id
            WHERE c.search_vector @@ t.q
              AND d.status = 'ready' AND d.collection_id = ANY(%(collections)s)
            LIMIT corpus.common
        ) found
    ) df
    WHERE df.n > 0
),
text_hits AS (
    SELECT id, row_number() OVER (ORDER BY score DESC, id) AS rank
    FROM (
        -- Passages with any uncommon word of the question (all of its words, when every one is
        -- common); ts_rank gives each word a saturating term-frequency weight, scaled by idf.
        SELECT c.id, (
            SELECT sum(w.idf * ts_rank(%(fts_weights)s::float4[], c.search_vector, w.q))
            FROM weighted_terms w
        ) AS score
        FROM ingestion_chunk c
        JOIN ingestion_document d ON d.id = c.document_id
        WHERE c.search_vector @@ (
            SELECT coalesce(
                (SELECT string_agg(q::text, ' | ') FROM weighted_terms WHERE NOT common),
                (SELECT string_agg(q::text, ' & ') FROM weighted_terms)
            )::tsquery
        ) AND d.status = 'ready' AND d.collection_id = ANY(%(collections)s)
        ORDER BY score DESC, c.id
        LIMIT %(text_candidates)s
    ) matched
),
"""
LEGACY_PARAMS = {"common_fraction": 0.05, "common_minimum": 50}


def legacy_sql() -> str:
    sql = search_module._SQL
    start, end = sql.index("corpus AS ("), sql.index("fused AS (")
    ctes = LEGACY_TEXT_CTES.replace("{_TERMS_SQL}", search_module._TERMS_SQL)
    return sql[:start] + ctes + sql[end:]


@contextmanager
def legacy_statement() -> Iterator[None]:
    """The previous full-text statement in place of the current one (vector part unchanged)."""
    current_sql, current_params = search_module._SQL, search_module._query_params

    def params(*args, **kwargs) -> dict:
        return {**current_params(*args, **kwargs), **LEGACY_PARAMS}

    search_module._SQL, search_module._query_params = legacy_sql(), params
    try:
        yield
    finally:
        search_module._SQL, search_module._query_params = current_sql, current_params


def measure(collection_ids: list[int], texts: list[str], mode: str) -> list[float]:
    search_collections(collection_ids, texts[0], 8, mode)  # warm caches and the model
    timings = []
    for text in texts:
        started = time.perf_counter()
        search_collections(collection_ids, text, 8, mode)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def report(label: str, timings: list[float]) -> None:
    print(
        f"  {label:<22} p50 {percentile(timings, 0.50):7.1f} ms   "
        f"p95 {percentile(timings, 0.95):7.1f} ms   over {len(timings)} queries"
    )


def agreement(collection_ids: list[int], texts: list[str], depth: int = 8) -> float:
    """Share of the previous statement's full-text top `depth` that the current one returns too
    (the previous ranking is exhaustive: every passage with an uncommon word scored)."""
    kept = total = 0
    for text in dict.fromkeys(texts):
        current = {p.chunk_id for p in search_collections(collection_ids, text, depth, "fts")}
        with legacy_statement():
            previous = {p.chunk_id for p in search_collections(collection_ids, text, depth, "fts")}
        kept += len(current & previous)
        total += len(previous)
    return kept / total if total else 1.0


def explain(collection_ids: list[int], text: str) -> None:
    """EXPLAIN ANALYZE of the hybrid statement for one question."""
    params = search_module._query_params(collection_ids, text, "hybrid", 8)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + search_module._SQL, params)
        print(f"  EXPLAIN ANALYZE, hybrid, {text!r}:")
        for (line,) in cursor.fetchall():
            print("    " + re.sub(r"'\[[^]]*\]'::vector", "'[...]'::vector", line))


def latency(
    sizes: list[int],
    query_count: int,
    modes: list[str],
    compare: bool,
    explain_at: list[int],
    keep: bool,
) -> None:
    # Timings, not the configured statement timeout, are what this measures (the previous
    # statement runs past 5 s on a busy machine).
    settings.RAG_SEARCH_TIMEOUT_MS = 0
    rng = np.random.default_rng(42)
    words = vocabulary()
    texts = queries(query_count)
    embedding.embed_query(texts[0])
    timings = []
    for text in texts:
        started = time.perf_counter()
        embedding.embed_query(text)
        timings.append((time.perf_counter() - started) * 1000)
    report(f"query embedding alone ({embedding.get_model().device})", timings)

    collection = Collection.objects.filter(name=SCRATCH).first()
    present = collection and synthetic_count(collection)
    if collection and not (keep and present in sizes):
        remove_collection(collection)
        collection = None
    if collection is None:
        collection, present = Collection.objects.create(name=SCRATCH), 0
    try:
        for size in sorted(sizes):
            if size < present:
                continue
            started = time.perf_counter()
            if size > present:
                add_synthetic_chunks(collection, size - present, words, rng)
                print(f"{size:>7} chunks (loaded in {time.perf_counter() - started:.0f}s)")
            else:
                print(f"{size:>7} chunks (kept from the last run)")
            present = size
            ids = [collection.pk]
            print("  the whole search (question embedding included):")
            for mode in modes:
                report(mode, measure(ids, texts, mode))
            print("  the search statement alone:")
            for mode in modes:
                report(mode, measure_statement(ids, texts, mode))
            if compare:
                print("  the previous full-text statement, same data:")
                with legacy_statement():
                    for mode in modes:
                        if mode != "vector":
                            report(f"{mode} (statement)", measure_statement(ids, texts, mode))
                share = agreement(ids, texts)
                print(f"  full-text top 8 kept from the previous (exhaustive) ranking: {share:.1%}")
            if size in explain_at:
                explain(ids, texts[0])
    finally:
        if not keep:
            remove_collection(collection)


def synthetic_count(collection: Collection) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM ingestion_chunk c JOIN ingestion_document d"
            " ON d.id = c.document_id WHERE d.collection_id = %s",
            [collection.pk],
        )
        return cursor.fetchone()[0]


def measure_statement(collection_ids: list[int], texts: list[str], mode: str) -> list[float]:
    """The search statement's own time: the question embedded beforehand."""
    prepared = [search_module._query_params(collection_ids, text, mode, 8) for text in texts]
    search_module._run(search_module._SQL, prepared[0])
    timings = []
    for params in prepared:
        started = time.perf_counter()
        search_module._run(search_module._SQL, params)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def quality(compare: bool) -> None:
    if not (EVAL_DIR / "corpus").is_dir():
        print(f"dev eval set not found at {EVAL_DIR}; quality skipped")
        return
    started = time.perf_counter()
    loaded = evaluation.ingest_corpus(EVAL_DIR / "corpus", EVAL_COLLECTION)
    print(
        f"dev corpus: {loaded.documents} documents in {EVAL_COLLECTION!r} "
        f"({loaded.ingested} ingested now, {time.perf_counter() - started:.0f}s)"
    )
    statements = [("", nullcontext)]
    if compare:
        statements = [("current ", nullcontext), ("previous", legacy_statement)]
    for name in ("questions.jsonl", "questions-hard.jsonl"):
        questions = evaluation.load_questions(EVAL_DIR / name)
        print(f"{name}:  {'':9}mode     hit@1  hit@5  MRR@10  nDCG@10  (distinct pages)")
        for label, statement in statements:
            with statement():
                report = evaluation.run_questions(questions, [loaded.collection.pk])
            for mode, m in report.distinct_metrics.items():
                print(
                    f"{'':{len(name) + 3}}{label:<9}{mode:<8} {m.hit_at_1:.3f}  {m.hit_at_5:.3f}  "
                    f"{m.mrr_at_10:.3f}   {m.ndcg_at_10:.3f}"
                )
        if compare:
            # The answers are where a ranking change shows to a reader: same questions, both.
            for label, statement in statements:
                with statement():
                    a = evaluation.summarize_answers(
                        evaluation.run_answers(questions, loaded.collection)
                    )
                print(
                    f"{'':{len(name) + 3}}{label:<9}answers: answered {a.answered:.3f}  declined "
                    f"{a.declined:.3f}  text holds expected {a.text_contains:.3f}  cited right "
                    f"page {a.cited_right_document:.3f}  citation precision "
                    f"{a.citation_precision:.3f}"
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
        "--sizes", default="100000", help="chunk counts, comma separated (100k: ~6 min to load)"
    )
    parser.add_argument(
        "--million", action="store_true", help="add the 1M point (about an hour to load on 2 cores)"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--modes", default="hybrid,vector,fts", help="hybrid,vector,fts")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also run the previous full-text statement: its latency, and its quality on the dev set",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the synthetic chunks for the next run (which reuses them at the same size)",
    )
    parser.add_argument(
        "--explain", default="100000", help="sizes to print EXPLAIN ANALYZE at (comma separated)"
    )
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    # Quality first: it must not run against an index still full of the synthetic rows' ghosts.
    print("== retrieval quality (dev set) ==")
    if not args.skip_quality:
        quality(args.compare)
    print("== retrieval latency ==")
    if not args.skip_latency:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        latency(
            sizes + [1_000_000] * args.million,
            args.queries,
            [m.strip() for m in args.modes.split(",") if m.strip()],
            args.compare,
            [int(s) for s in args.explain.split(",") if s.strip()],
            args.keep,
        )


if __name__ == "__main__":
    main()
