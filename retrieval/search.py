"""Search step: hybrid retrieval (pgvector HNSW + Postgres full-text, fused by RRF) in one SQL
statement, restricted inside that statement to ready documents the caller may read.

Returns plain Passage values, never querysets.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import connection

from ingestion import embedding
from ingestion.models import FTS_CONFIG
from ingestion.permissions import readable_collection_ids

RRF_K = 60  # reciprocal rank fusion constant (Cormack et al.); damps the weight of top ranks
CANDIDATES = 50  # how deep each method looks before fusion


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


# Only module constants are formatted into the SQL; every value is a bound parameter.
_SQL = f"""
WITH allowed AS (
    SELECT d.id FROM ingestion_document d
    WHERE d.status = 'ready' AND d.collection_id = ANY(%(collections)s)
),
vector_hits AS (
    SELECT id, row_number() OVER (ORDER BY distance) AS rank, 1 - distance AS similarity
    FROM (
        SELECT c.id, c.embedding <=> %(embedding)s::vector AS distance
        FROM ingestion_chunk c
        WHERE c.document_id IN (SELECT id FROM allowed)
        ORDER BY c.embedding <=> %(embedding)s::vector
        LIMIT %(candidates)s
    ) nearest
),
query AS (
    -- Any of the question's words may match (a question rarely has every word on one page);
    -- ts_rank_cd then prefers chunks where more of them occur close together.
    SELECT to_tsquery('{FTS_CONFIG}', coalesce(nullif(
        array_to_string(tsvector_to_array(to_tsvector('{FTS_CONFIG}', %(text)s)), ' | '), ''), '')) AS q
),
text_hits AS (
    SELECT id, row_number() OVER (ORDER BY score DESC, id) AS rank
    FROM (
        SELECT c.id, ts_rank_cd(c.search_vector, query.q, 1) AS score
        FROM ingestion_chunk c, query
        WHERE c.search_vector @@ query.q AND c.document_id IN (SELECT id FROM allowed)
        ORDER BY score DESC
        LIMIT %(candidates)s
    ) matched
),
fused AS (
    SELECT coalesce(v.id, t.id) AS id, v.rank AS vector_rank, t.rank AS fts_rank, v.similarity,
           %(vector_weight)s * coalesce(1.0 / ({RRF_K} + v.rank), 0)
           + %(fts_weight)s * coalesce(1.0 / ({RRF_K} + t.rank), 0) AS score
    FROM vector_hits v FULL OUTER JOIN text_hits t ON v.id = t.id
)
SELECT c.id, c.document_id, d.collection_id, d.title, c.text, c.heading, c.page_start, c.page_end,
       f.score, f.vector_rank, f.fts_rank,
       coalesce(f.similarity, 1 - (c.embedding <=> %(embedding)s::vector)) AS similarity
FROM fused f
JOIN ingestion_chunk c ON c.id = f.id
JOIN ingestion_document d ON d.id = c.document_id
ORDER BY f.score DESC, f.id
LIMIT %(limit)s
"""  # noqa: S608


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
        allowed = [cid for cid in allowed if cid in set(collection_ids)]
    return search_collections(allowed, question, limit, mode)


def search_collections(
    collection_ids: list[int], question: str, limit: int | None = None, mode: str = "hybrid"
) -> list[Passage]:
    """Search exactly these collections. Callers outside this module go through `search`, which
    derives the ids from the user's permissions; the eval command uses this directly."""
    question = question.strip()
    if not question or not collection_ids:
        return []
    weights = {"hybrid": (1.0, 1.0), "vector": (1.0, 0.0), "fts": (0.0, 1.0)}[mode]
    params = {
        "collections": list(collection_ids),
        "embedding": embedding.embed_query(question).tolist(),
        "text": question,
        "candidates": CANDIDATES,
        "vector_weight": weights[0],
        "fts_weight": weights[1],
        "limit": limit or settings.RAG_SEARCH_TOP_K,
    }
    with connection.cursor() as cursor:
        cursor.execute(_SQL, params)
        rows = cursor.fetchall()
    passages = [Passage(*row[:8], float(row[8]), row[9], row[10], float(row[11])) for row in rows]
    if mode == "vector":
        passages = [p for p in passages if p.vector_rank is not None]
    elif mode == "fts":
        passages = [p for p in passages if p.fts_rank is not None]
    return passages
