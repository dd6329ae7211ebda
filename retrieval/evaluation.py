"""Retrieval evaluation: hit@k, MRR@10 and nDCG@10 as pure functions, and running a question set
against collections with each search mode (vector, fts, hybrid).

A ranking is the list of source-document names of the passages, in the order search returned
them: what the answer step would be shown. Relevance is per document; a relevant document counts
once, at its first passage, so ten passages of one page do not inflate nDCG.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from ingestion import pipeline, services
from ingestion.models import Collection, Document

MODES = ("vector", "fts", "hybrid")
DEPTH = 10  # passages looked at per question: MRR@10 and nDCG@10 need ten


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    doc: str | None  # the corpus file that answers it; None: the corpus cannot answer it
    also: tuple[str, ...] = ()
    answer_contains: tuple[str, ...] = ()
    kind: str = ""

    @property
    def relevant(self) -> frozenset[str]:
        return frozenset((self.doc, *self.also)) if self.doc else frozenset()

    @property
    def answerable(self) -> bool:
        return self.doc is not None


@dataclass(frozen=True)
class QuestionResult:
    question: Question
    mode: str
    ranked: tuple[str, ...]  # source-document names of the top passages, best first
    top_similarity: float | None  # cosine similarity of the first passage to the question


@dataclass(frozen=True)
class Metrics:
    questions: int  # answerable questions the hit metrics are computed over
    hit_at_1: float
    hit_at_5: float
    mrr_at_10: float
    ndcg_at_10: float


@dataclass(frozen=True)
class SimilarityStats:
    count: int
    mean: float | None
    max: float | None
    min: float | None


@dataclass
class EvalReport:
    metrics: dict[str, Metrics] = field(default_factory=dict)  # by mode
    # Top-1 similarity (vector mode) for answerable and unanswerable questions: where a
    # no-answer threshold for the answer step could sit.
    answerable_similarity: SimilarityStats | None = None
    unanswerable_similarity: SimilarityStats | None = None
    results: list[QuestionResult] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "metrics": {mode: vars(m) for mode, m in self.metrics.items()},
            "top1_similarity": {
                "answerable": vars(self.answerable_similarity)
                if self.answerable_similarity
                else None,
                "unanswerable": vars(self.unanswerable_similarity)
                if self.unanswerable_similarity
                else None,
            },
            "questions": [
                {
                    "id": r.question.id,
                    "mode": r.mode,
                    "relevant": sorted(r.question.relevant),
                    "ranked": list(r.ranked),
                    "top_similarity": r.top_similarity,
                }
                for r in self.results
            ],
        }


# --- metrics: pure functions over a ranking and a set of relevant documents ---------------------
def hit_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """1.0 when any of the first `k` results is relevant, else 0.0."""
    wanted = set(relevant)
    return 1.0 if any(name in wanted for name in ranked[:k]) else 0.0


def reciprocal_rank(ranked: Sequence[str], relevant: Iterable[str], k: int = DEPTH) -> float:
    """1 / the 1-based position of the first relevant result within the first `k`, else 0."""
    wanted = set(relevant)
    for position, name in enumerate(ranked[:k], start=1):
        if name in wanted:
            return 1.0 / position
    return 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int = DEPTH) -> float:
    """Binary-relevance nDCG@k; each relevant document is credited once, at its first position."""
    wanted = set(relevant)
    if not wanted:
        return 0.0
    seen: set[str] = set()
    dcg = 0.0
    for position, name in enumerate(ranked[:k], start=1):
        if name in wanted and name not in seen:
            seen.add(name)
            dcg += 1.0 / math.log2(position + 1)
    ideal = sum(1.0 / math.log2(position + 1) for position in range(1, min(len(wanted), k) + 1))
    return dcg / ideal


def summarize(rankings: Sequence[tuple[Sequence[str], Iterable[str]]]) -> Metrics:
    """Mean metrics over (ranking, relevant documents) pairs; pairs without relevance are
    skipped (unanswerable questions have no hit to find)."""
    pairs = [(ranked, set(relevant)) for ranked, relevant in rankings]
    pairs = [(ranked, relevant) for ranked, relevant in pairs if relevant]
    if not pairs:
        return Metrics(0, 0.0, 0.0, 0.0, 0.0)

    def mean(values: Iterable[float]) -> float:
        return statistics.fmean(values)

    return Metrics(
        questions=len(pairs),
        hit_at_1=mean(hit_at_k(r, rel, 1) for r, rel in pairs),
        hit_at_5=mean(hit_at_k(r, rel, 5) for r, rel in pairs),
        mrr_at_10=mean(reciprocal_rank(r, rel, 10) for r, rel in pairs),
        ndcg_at_10=mean(ndcg_at_k(r, rel, 10) for r, rel in pairs),
    )


def similarity_stats(values: Iterable[float | None]) -> SimilarityStats:
    present = [v for v in values if v is not None]
    if not present:
        return SimilarityStats(0, None, None, None)
    return SimilarityStats(len(present), statistics.fmean(present), max(present), min(present))


# --- corpus --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusResult:
    collection: Collection
    documents: int  # ready documents in the collection after the run
    ingested: int  # documents run through the pipeline this time
    failed: list[str]  # file names that failed, with the reason


def ingest_corpus(directory: Path, collection_name: str, reingest: bool = False) -> CorpusResult:
    """Load every file of `directory` into the (restricted) collection `collection_name`, in this
    process. Files already there with the same bytes are kept as they are unless `reingest`, so
    a second run costs only the hashing."""
    collection, _ = Collection.objects.get_or_create(
        name=collection_name, defaults={"visibility": Collection.Visibility.RESTRICTED}
    )
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    pending: dict[int, str] = {}
    failed: list[str] = []
    for path in files:
        try:
            result = services.register_path(collection, path, enqueue=False)
        except services.UploadRejected as exc:
            failed.append(f"{path.name}: {exc}")
            continue
        document = result.document
        if document.status != Document.Status.READY or reingest:
            pending[document.pk] = path.name
    if reingest and pending:
        # The pipeline skips ready documents (a redelivered task); mark them for another pass.
        with transaction.atomic():
            Document.objects.filter(pk__in=pending).update(status=Document.Status.QUEUED)
    for document_id, name in pending.items():
        outcome = pipeline.ingest(document_id)
        if outcome.status == Document.Status.FAILED:
            failed.append(f"{name}: {outcome.error}")
    ready = collection.documents.filter(status=Document.Status.READY).count()
    return CorpusResult(collection, ready, len(pending), failed)


# --- question sets ----------------------------------------------------------------------------
def load_questions(path: Path) -> list[Question]:
    """One JSON object a line: id, question, doc (or null), also (optional), answer_contains."""
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            questions.append(
                Question(
                    id=str(item["id"]),
                    question=item["question"],
                    doc=item.get("doc") or None,
                    also=tuple(item.get("also") or ()),
                    answer_contains=tuple(item.get("answer_contains") or ()),
                    kind=item.get("kind", ""),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a question object ({exc})") from exc
    return questions


def run_questions(
    questions: Sequence[Question],
    collection_ids: list[int],
    modes: Sequence[str] = MODES,
    depth: int = DEPTH,
) -> EvalReport:
    """Search `collection_ids` with every question in every mode and score the rankings.

    Documents are named by their original file name, which is how question sets name them.
    """
    from retrieval.search import search_collections

    names = dict(
        Document.objects.filter(collection_id__in=collection_ids).values_list("id", "original_name")
    )
    report = EvalReport()
    for mode in modes:
        results = []
        for question in questions:
            passages = search_collections(collection_ids, question.question, depth, mode)
            results.append(
                QuestionResult(
                    question=question,
                    mode=mode,
                    ranked=tuple(names.get(p.document_id, "") for p in passages),
                    top_similarity=passages[0].similarity if passages else None,
                )
            )
        report.metrics[mode] = summarize([(r.ranked, r.question.relevant) for r in results])
        report.results.extend(results)
    # Vector similarity is the one score comparable across questions: a threshold candidate.
    by_vector = [r for r in report.results if r.mode == "vector"] or [
        r for r in report.results if r.mode == modes[0]
    ]
    report.answerable_similarity = similarity_stats(
        r.top_similarity for r in by_vector if r.question.answerable
    )
    report.unanswerable_similarity = similarity_stats(
        r.top_similarity for r in by_vector if not r.question.answerable
    )
    return report
