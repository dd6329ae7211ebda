"""Search step: hybrid retrieval (pgvector HNSW + BM25-style full-text, fused by RRF) in one SQL
statement, restricted inside that statement to ready documents the caller may read.

Returns plain Passage values, never querysets. An optional cross-encoder (retrieval.rerank)
reorders the fused candidates when one is configured.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import OperationalError, connection, transaction
from rest_framework import exceptions, status

from ingestion import embedding
from ingestion.chunking import embedding_text
from ingestion.models import FTS_CONFIG
from ingestion.permissions import readable_collection_ids

logger = logging.getLogger(__name__)

MODES = ("hybrid", "vector", "fts")
_NAME_SEPARATORS = re.compile(r"(?<=\w)[./](?=\w)")
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al.); damps the weight of top ranks
CANDIDATES = 50  # how deep each method looks before fusion
RERANK_DEPTH = 30  # fused candidates a configured cross-encoder reorders
# ts_rank weights for labels D, C, B, A. Titles and headings (A) count like body text (B): they
# repeat on every chunk of a page, and weighting them up let a page title outvote the passage.
FTS_WEIGHTS = [0.1, 0.2, 0.4, 0.4]
# Full text ranks at most this many candidate passages: all the passages of the question's rarest
# words, rarest first, until the budget is spent (or, when even the rarest word is in more
# passages, those holding every word). Commoner words only add to the candidates' scores: a
# passage with none of the rarer words can only fill the list below those that have them. The
# budget bounds the work at any corpus size (each candidate costs a heap and TOAST read, ~20 us).
# On the development set (4,100 passages) 1000 ranks as every match does, 400-500 differ by one
# hybrid hit@1 of 33 easy questions, 100-200 lose hit@5 on the hard ones.
TEXT_BUDGET = 500
# Full-text work grows with the question's distinct words: each one is a sub-query. Past
# this many, only the longest are kept (length is the rarity estimate that costs nothing; the
# short ones are the generic words). Every development-set question has 14 or fewer (p50 8), so
# ordinary questions keep every word; a pasted page of 500 words costs what a long question does.
MAX_QUERY_TERMS = 16

TIMEOUT_MESSAGE = "The search took too long. Try a shorter or more specific question."


class SearchUnavailable(exceptions.APIException):
    """The question could not be embedded (the embedding server is down, the model missing). An
    APIException, so the API answers 503 with this message; `str()` is fit to show a person."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "search_unavailable"
    default_detail = "Search is unavailable right now. Please try again shortly."


class SearchTimeout(exceptions.APIException):
    """The search statement ran past RAG_SEARCH_TIMEOUT_MS and PostgreSQL cancelled it. An
    APIException, so the API answers 503 with this message; `str()` is fit to show a person."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "search_timeout"
    default_detail = TIMEOUT_MESSAGE


@dataclass(frozen=True)
class Passage:
    chunk_id: int
    document_id: int
    collection_id: int
    document_title: str
    text: str
    heading: str
    page_start: int | None
    page_end: int | None
    score: float  # the fused score the passages are ordered by
    vector_rank: int | None = None  # 1-based rank in the vector results, None if absent
    fts_rank: int | None = None
    similarity: float | None = None  # cosine similarity of the chunk to the query
    rerank_score: float | None = None  # the cross-encoder's score, when one reordered them
    hyde_rank: int | None = None  # rank in the hypothetical-answer (HyDE) results, when used


# Each word of the question as its own one-word query: the lexeme quoted and escaped (chr(92) is
# a backslash), never parsed again. At most %(max_terms)s of them, the longest first.
_TERMS_SQL = f"""
    SELECT lexeme, ('''' || replace(replace(lexeme, chr(92), chr(92) || chr(92)), '''', '''''') || '''')
        ::tsquery AS q
    FROM unnest(tsvector_to_array(to_tsvector('{FTS_CONFIG}', %(text)s))) AS lexeme
    ORDER BY length(lexeme) DESC, lexeme
    LIMIT %(max_terms)s
"""  # noqa: S608

# Only module constants are formatted into the SQL; every value is a bound parameter.
_SQL = f"""
-- Every method applies the permission filter itself, inside its own scan: only chunks of ready
-- documents in the readable collections are ever ranked.
WITH vector_hits AS (
    SELECT id, row_number() OVER (ORDER BY distance) AS rank, 1 - distance AS similarity
    FROM (
        SELECT c.id, c.embedding <=> %(embedding)s::vector AS distance
        FROM ingestion_chunk c
        JOIN ingestion_document d ON d.id = c.document_id
        WHERE d.status = 'ready' AND d.collection_id = ANY(%(collections)s)
        ORDER BY c.embedding <=> %(embedding)s::vector
        LIMIT %(vector_candidates)s
    ) nearest
),
hyde_hits AS (
    -- HyDE (RAG_HYDE): passages nearest a hypothetical answer the model wrote; LIMIT 0 when off.
    SELECT id, row_number() OVER (ORDER BY distance) AS rank
    FROM (
        SELECT c.id, c.embedding <=> %(hyde_embedding)s::vector AS distance
        FROM ingestion_chunk c
        JOIN ingestion_document d ON d.id = c.document_id
        WHERE d.status = 'ready' AND d.collection_id = ANY(%(collections)s)
        ORDER BY c.embedding <=> %(hyde_embedding)s::vector
        LIMIT %(hyde_candidates)s
    ) nearest
),
corpus AS (
    -- Searchable passages of the readable collections, from the statistics the triggers keep
    -- (ingestion_termstatistic: per collection, '' counts passages, each lexeme its passages).
    SELECT greatest(coalesce(sum(s.passages), 0), 1) AS chunks
    FROM ingestion_termstatistic s
    WHERE s.collection_id = ANY(%(collections)s) AND s.lexeme = ''
),
terms AS ({_TERMS_SQL}),
weighted_terms AS (
    -- Each word weighted by BM25's inverse document frequency over the passages the caller may
    -- read: a word found everywhere ("use", "function") says little, a rare one ("deepcopy") a
    -- lot. `rarer`: how many passages the rarer words of the question match, at most.
    SELECT q, df, idf,
           coalesce(sum(df) OVER (ORDER BY df, lexeme ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                    0) AS rarer
    FROM (
        SELECT t.lexeme, t.q, df.n AS df, ln(1 + (corpus.chunks - df.n + 0.5) / (df.n + 0.5)) AS idf
        FROM terms t
        CROSS JOIN corpus
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(s.passages), 0) AS n FROM ingestion_termstatistic s
            WHERE s.collection_id = ANY(%(collections)s) AND s.lexeme = t.lexeme
        ) df
        WHERE df.n > 0
    ) counted
),
candidates AS (
    -- The passages that can make the top: every passage of the rarest words, rarest first,
    -- until %(text_budget)s are taken (the word that crosses the budget gives its first matches
    -- only; the commoner words none). When even the rarest word is past the budget, the
    -- passages holding every word come first. A passage with only commoner words can only fill
    -- the list below those found here.
    SELECT found.id, found.v
    FROM weighted_terms w
    CROSS JOIN LATERAL (
        SELECT c.id, c.search_vector AS v FROM ingestion_chunk c
        JOIN ingestion_document d ON d.id = c.document_id
        WHERE c.search_vector @@ w.q
          AND d.status = 'ready' AND d.collection_id = ANY(%(collections)s)
        LIMIT greatest(%(text_budget)s - w.rarer, 0)
    ) found
    UNION ALL
    (
        SELECT c.id, c.search_vector FROM ingestion_chunk c
        JOIN ingestion_document d ON d.id = c.document_id
        WHERE (SELECT min(df) FROM weighted_terms) > %(text_budget)s
          AND c.search_vector @@ (SELECT string_agg(q::text, ' & ') FROM weighted_terms)::tsquery
          AND d.status = 'ready' AND d.collection_id = ANY(%(collections)s)
        LIMIT %(text_budget)s
    )
),
candidate_vectors AS MATERIALIZED (
    -- Each candidate's tsvector read once: concatenating it (with nothing) brings it out of
    -- TOAST into memory, where every word's ts_rank below reads it.
    SELECT DISTINCT ON (id) id, v || ''::tsvector AS v
    FROM candidates
    ORDER BY id
),
text_hits AS (
    SELECT id, row_number() OVER (ORDER BY score DESC, id) AS rank
    FROM (
        -- ts_rank gives each word a saturating term-frequency weight, scaled by its idf.
        SELECT k.id, (
            SELECT sum(w.idf * ts_rank(%(fts_weights)s::float4[], k.v, w.q))
            FROM weighted_terms w
        ) AS score
        FROM candidate_vectors k
        ORDER BY score DESC, k.id
        LIMIT %(text_candidates)s
    ) matched
),
fused AS (
    SELECT id, min(vector_rank) AS vector_rank, min(fts_rank) AS fts_rank,
           min(hyde_rank) AS hyde_rank, max(similarity) AS similarity,
           %(vector_weight)s * coalesce(1.0 / (%(rrf_k)s + min(vector_rank)), 0)
           + %(fts_weight)s * coalesce(1.0 / (%(rrf_k)s + min(fts_rank)), 0)
           + %(hyde_weight)s * coalesce(1.0 / (%(rrf_k)s + min(hyde_rank)), 0) AS score
    FROM (
        SELECT id, rank AS vector_rank, NULL::bigint AS fts_rank, NULL::bigint AS hyde_rank,
               similarity
        FROM vector_hits
        UNION ALL SELECT id, NULL, rank, NULL, NULL FROM text_hits
        UNION ALL SELECT id, NULL, NULL, rank, NULL FROM hyde_hits
    ) hits
    GROUP BY id
)
SELECT c.id, c.document_id, d.collection_id, d.title, c.text, c.heading, c.page_start, c.page_end,
       f.score, f.vector_rank, f.fts_rank,
       coalesce(f.similarity, 1 - (c.embedding <=> %(embedding)s::vector)) AS similarity,
       f.hyde_rank
FROM fused f
JOIN ingestion_chunk c ON c.id = f.id
JOIN ingestion_document d ON d.id = c.document_id
ORDER BY f.score DESC, f.id
LIMIT %(limit)s
"""  # noqa: S608


def full_text_query(question: str) -> str:
    """The question as full-text search reads it: dotted and slashed names (os.path.realpath,
    Lib/copy.py) are one token to PostgreSQL's parser, so their parts are added as words too."""
    parts = _NAME_SEPARATORS.sub(" ", question)
    return question if parts == question else f"{question} {parts}"


def search(
    user: User | AnonymousUser,
    question: str,
    limit: int | None = None,
    collection_ids: list[int] | None = None,
    mode: str = "hybrid",
) -> list[Passage]:
    """The passages best answering `question` among documents `user` may read.

    `collection_ids` narrows the search further (never widens it). `mode` is hybrid, vector or
    fts; the single methods exist for evaluation.
    """
    allowed = readable_collection_ids(user)
    if collection_ids is not None:
        wanted = set(collection_ids)
        allowed = [cid for cid in allowed if cid in wanted]
    return search_collections(allowed, question, limit, mode)


def _query_params(
    collection_ids: list[int], question: str, mode: str, limit: int, hyde_passage: str | None = None
) -> dict:
    vector_weight = 0.0 if mode == "fts" else 1.0
    fts_weight = 0.0 if mode == "vector" else 1.0
    question_vector = embedding.embed_query(question).tolist()
    hyde_weight = vector_weight if hyde_passage else 0.0
    return {
        "collections": list(collection_ids),
        "embedding": question_vector,
        # The hypothetical answer is embedded as passages are (it plays one).
        "hyde_embedding": embedding.embed_texts([hyde_passage])[0].tolist()
        if hyde_weight
        else question_vector,
        "text": full_text_query(question),
        # A method left out of the mode is not run at all (LIMIT 0 reads nothing).
        "vector_candidates": CANDIDATES if vector_weight else 0,
        "text_candidates": CANDIDATES if fts_weight else 0,
        "hyde_candidates": CANDIDATES if hyde_weight else 0,
        "vector_weight": vector_weight,
        "fts_weight": fts_weight,
        "hyde_weight": hyde_weight,
        "rrf_k": RRF_K,
        "fts_weights": FTS_WEIGHTS,
        "text_budget": TEXT_BUDGET,
        "max_terms": MAX_QUERY_TERMS,
        "limit": limit,
    }


def search_collections(
    collection_ids: list[int], question: str, limit: int | None = None, mode: str = "hybrid"
) -> list[Passage]:
    """Search exactly these collections. Callers outside this module go through `search`, which
    derives the ids from the user's permissions; evaluation and the debug command use this."""
    from retrieval import rerank

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    question = question.strip()
    if not question or not collection_ids:
        return []
    limit = limit or settings.RAG_SEARCH_TOP_K
    reranker = rerank.get_reranker()
    hyde_passage = None
    if mode != "fts" and settings.RAG_HYDE:
        from retrieval import query_expansion

        hyde_passage = query_expansion.hypothetical_passage(question)
    try:
        params = _query_params(
            collection_ids,
            question,
            mode,
            max(limit, RERANK_DEPTH) if reranker else limit,
            hyde_passage,
        )
    except (embedding.EmbeddingUnavailable, embedding.EmbeddingModelError) as exc:
        logger.warning("search: the question could not be embedded: %s", exc)
        raise SearchUnavailable() from exc
    rows = _run(_SQL, params)
    passages = [
        Passage(*row[:8], float(row[8]), row[9], row[10], float(row[11]), hyde_rank=row[12])
        for row in rows
    ]
    if reranker is not None and passages:
        # The cross-encoder sees what the embedder saw: title and heading path give context.
        try:
            scores = reranker.score(
                question, [embedding_text(p.document_title, p.heading, p.text) for p in passages]
            )
        except rerank.RerankUnavailable as exc:
            logger.warning("reranker unavailable (%s); search keeps fusion order", exc)
        else:
            reranked = sorted(zip(scores, passages, strict=True), key=lambda pair: -pair[0])
            passages = [replace(p, rerank_score=float(s)) for s, p in reranked]
    return passages[:limit]


def _run(sql: str, params: dict) -> list[tuple]:
    """Execute a search statement under RAG_SEARCH_TIMEOUT_MS (set for this transaction only and
    put back afterwards, so a caller's own transaction keeps its setting)."""
    timeout_ms = int(settings.RAG_SEARCH_TIMEOUT_MS)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            previous = None
            if timeout_ms > 0:
                cursor.execute(
                    "SELECT current_setting('statement_timeout'), "
                    "set_config('statement_timeout', %s, true)",
                    [f"{timeout_ms}ms"],
                )
                previous = cursor.fetchone()[0]
            cursor.execute(sql, params)
            rows = cursor.fetchall()
            if previous is not None:
                cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])
            return rows
    except OperationalError as exc:
        # psycopg's QueryCanceled (SQLSTATE 57014) is what statement_timeout raises.
        if getattr(exc.__cause__, "sqlstate", None) == "57014":
            raise SearchTimeout() from exc
        raise
