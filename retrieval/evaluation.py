"""Evaluation: retrieval (hit@k, MRR@10, nDCG@10, per passage and per distinct document) and the
whole answer path (answered/declined, expected text, citations, latency) over a question set.

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

from django.conf import settings
from django.db import transaction

from core.audit import Via
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
    # The same rankings with each document counted once, at its first passage: comparable with
    # tools that rank documents, and what "the right page ranked first" means to a reader.
    distinct_metrics: dict[str, Metrics] = field(default_factory=dict)
    # Share of answerable questions whose page is among the passages an answer is made from.
    in_context: dict[str, float] = field(default_factory=dict)
    # Top-1 similarity (vector mode) for answerable and unanswerable questions: where a
    # no-answer threshold for the answer step could sit.
    answerable_similarity: SimilarityStats | None = None
    unanswerable_similarity: SimilarityStats | None = None
    results: list[QuestionResult] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "metrics": {mode: vars(m) for mode, m in self.metrics.items()},
            "distinct_metrics": {mode: vars(m) for mode, m in self.distinct_metrics.items()},
            "in_context": dict(self.in_context),
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


def distinct(ranked: Sequence[str]) -> list[str]:
    """`ranked` with each document kept once, at its first position."""
    return list(dict.fromkeys(ranked))


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
            result = services.register_path(collection, path, enqueue=False, via=Via.CLI)
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
    context: int | None = None,
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
        report.distinct_metrics[mode] = summarize(
            [(distinct(r.ranked), r.question.relevant) for r in results]
        )
        answerable = [r for r in results if r.question.answerable]
        report.in_context[mode] = (
            statistics.fmean(
                hit_at_k(r.ranked, r.question.relevant, context or settings.RAG_SEARCH_TOP_K)
                for r in answerable
            )
            if answerable
            else 0.0
        )
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


# --- the whole answer path ------------------------------------------------------------------------
EVAL_USERNAME = "rag-eval"


@dataclass(frozen=True)
class CitedPassage:
    document: str  # the cited document's original file name
    text: str


@dataclass(frozen=True)
class AnswerResult:
    question: Question
    outcome: str  # a Message.Outcome value
    text: str
    cited: tuple[CitedPassage, ...]
    latency_s: float

    @property
    def answered(self) -> bool:
        return self.outcome == "answered"

    @property
    def text_contains(self) -> bool:
        """The answer holds every expected string (case-insensitive)."""
        return self.answered and contains_all(self.text, self.question.answer_contains)

    @property
    def citation_contains(self) -> bool:
        """Some cited passage holds every expected string."""
        return self.answered and any(
            contains_all(c.text, self.question.answer_contains) for c in self.cited
        )

    @property
    def cited_right_document(self) -> bool:
        return self.answered and any(c.document in self.question.relevant for c in self.cited)

    @property
    def citation_precision(self) -> float | None:
        """Share of the cited documents that answer the question; None when nothing is cited."""
        documents = {c.document for c in self.cited}
        if not self.answered or not documents:
            return None
        return len(documents & self.question.relevant) / len(documents)


def contains_all(text: str, expected: Iterable[str]) -> bool:
    lowered = text.casefold()
    wanted = [e.casefold() for e in expected]
    return bool(wanted) and all(e in lowered for e in wanted)


@dataclass(frozen=True)
class AnswerMetrics:
    answerable: int
    unanswerable: int
    answered: float  # share of answerable questions answered (not declined)
    declined: float  # share of unanswerable questions declined
    text_contains: float  # over answerable questions: the answer holds the expected strings
    citation_contains: float  # over answerable: a cited passage holds them
    cited_right_document: float  # over answerable: a citation names a relevant document
    citation_precision: float  # mean over answered answerable questions that cite something
    latency_p50_s: float
    latency_p95_s: float


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def summarize_answers(results: Sequence[AnswerResult]) -> AnswerMetrics:
    answerable = [r for r in results if r.question.answerable]
    unanswerable = [r for r in results if not r.question.answerable]

    def share(rows: Sequence[AnswerResult], test) -> float:
        return statistics.fmean(1.0 if test(r) else 0.0 for r in rows) if rows else 0.0

    precisions = [p for r in answerable if (p := r.citation_precision) is not None]
    latencies = [r.latency_s for r in results]
    return AnswerMetrics(
        answerable=len(answerable),
        unanswerable=len(unanswerable),
        answered=share(answerable, lambda r: r.answered),
        declined=share(unanswerable, lambda r: not r.answered),
        text_contains=share(answerable, lambda r: r.text_contains),
        citation_contains=share(answerable, lambda r: r.citation_contains),
        cited_right_document=share(answerable, lambda r: r.cited_right_document),
        citation_precision=statistics.fmean(precisions) if precisions else 0.0,
        latency_p50_s=percentile(latencies, 0.5),
        latency_p95_s=percentile(latencies, 0.95),
    )


def eval_user(collection: Collection):
    """The account evaluation questions are asked as: it reads the scratch collection only and
    cannot sign in."""
    from django.contrib.auth.models import User

    user, created = User.objects.get_or_create(username=EVAL_USERNAME)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    collection.reader_users.add(user)
    return user


def run_answers(questions: Sequence[Question], collection: Collection) -> list[AnswerResult]:
    """Ask every question through the answer path (the configured generator) restricted to
    `collection`, as the evaluation account; its conversations are removed afterwards."""
    import time

    from retrieval import answering
    from retrieval.models import Citation, Conversation

    user = eval_user(collection)
    names = dict(Document.objects.filter(collection=collection).values_list("id", "original_name"))
    results = []
    try:
        for question in questions:
            started = time.perf_counter()
            reply = answering.answer(
                user, question.question, collection_id=collection.pk, via=Via.CLI
            )
            elapsed = time.perf_counter() - started
            cited = tuple(
                CitedPassage(names.get(c.document_id, ""), c.snippet)
                for c in Citation.objects.filter(message_id=reply.message_id).order_by("number")
            )
            results.append(AnswerResult(question, reply.outcome, reply.text, cited, elapsed))
    finally:
        Conversation.objects.filter(user=user).delete()
    return results


def answer_details(results: Sequence[AnswerResult]) -> list[dict]:
    return [
        {
            "id": r.question.id,
            "kind": r.question.kind,
            "question": r.question.question,
            "expected": list(r.question.answer_contains),
            "relevant": sorted(r.question.relevant),
            "outcome": r.outcome,
            "answer": r.text,
            "cited": [c.document for c in r.cited],
            "text_contains": r.text_contains,
            "citation_contains": r.citation_contains,
            "latency_s": round(r.latency_s, 3),
        }
        for r in results
    ]


def answer_misses(results: Sequence[AnswerResult]) -> list[dict]:
    """The questions an admin should look at: answerable ones without the expected text, and
    unanswerable ones that were answered anyway."""
    return [
        row
        for row, r in zip(answer_details(results), results, strict=True)
        if (r.question.answerable and not r.text_contains)
        or (not r.question.answerable and r.answered)
    ]
