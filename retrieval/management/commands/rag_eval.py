"""manage.py rag_eval QUESTIONS.jsonl --corpus DIR [--answers] [--json]: quality on a question set.

Ingests the corpus into a scratch collection (kept between runs), then prints hit@1, hit@5,
MRR@10 and nDCG@10 for vector-only, full-text-only and hybrid search, per passage and per
distinct document. With --answers it also runs the whole answer path (the configured generator)
and prints answered/declined, expected text found, citation figures and latency. Every run is
stored for the console's Quality page.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from retrieval import evaluation
from retrieval.models import EvalRun

SCRATCH_COLLECTION = "rag-eval scratch"


class Command(BaseCommand):
    help = (
        "Measure retrieval quality (hit@k, MRR, nDCG) and, with --answers, answer quality on a "
        "question set over a corpus folder."
    )
    # Only the models and the search are used; a half-written view elsewhere must not stop it.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("questions", type=Path, help="JSON lines: id, question, doc, also")
        parser.add_argument("--corpus", type=Path, required=True, help="folder of the documents")
        parser.add_argument(
            "--collection",
            default=SCRATCH_COLLECTION,
            help=f"scratch collection to load the corpus into (default {SCRATCH_COLLECTION!r})",
        )
        parser.add_argument(
            "--reingest",
            action="store_true",
            help="run the pipeline again on documents already loaded (after a chunking change)",
        )
        parser.add_argument(
            "--mode", action="append", choices=evaluation.MODES, help="repeat; default all three"
        )
        parser.add_argument(
            "--answers",
            action="store_true",
            help="also ask every question through the answer path and score the answers",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object instead")
        parser.add_argument(
            "--details", action="store_true", help="also list the questions that were missed"
        )
        parser.add_argument(
            "--no-store", action="store_true", help="do not keep this run for the Quality page"
        )

    def handle(self, *args, questions: Path, corpus: Path, **options):
        if not questions.is_file():
            raise CommandError(f"No such question file: {questions}")
        if not corpus.is_dir():
            raise CommandError(f"No such corpus folder: {corpus}")
        try:
            question_set = evaluation.load_questions(questions)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc

        started = time.monotonic()
        loaded = evaluation.ingest_corpus(corpus, options["collection"], options["reingest"])
        ingest_seconds = time.monotonic() - started
        started = time.monotonic()
        modes = options["mode"] or list(evaluation.MODES)
        report = evaluation.run_questions(question_set, [loaded.collection.pk], modes)
        search_seconds = time.monotonic() - started
        answers: list[evaluation.AnswerResult] = []
        answer_metrics = None
        generator = ""
        if options["answers"]:
            from retrieval import llm

            answers = evaluation.run_answers(question_set, loaded.collection)
            answer_metrics = evaluation.summarize_answers(answers)
            generator = llm.get_generator().name

        figures = {
            "retrieval": {mode: vars(m) for mode, m in report.metrics.items()},
            "distinct": {mode: vars(m) for mode, m in report.distinct_metrics.items()},
            "in_context": dict(report.in_context),
        }
        if answer_metrics:
            figures["answers"] = vars(answer_metrics)
        misses = self._retrieval_misses(report)
        if answers:
            misses = evaluation.answer_misses(answers) + misses
        if not options["no_store"]:
            EvalRun.objects.create(
                questions_file=questions.name,
                corpus=str(corpus)[-300:],
                question_count=len(question_set),
                generator=generator[:200],
                embedding_model=str(
                    getattr(settings, "RAG_EMBEDDING_URL", "") or settings.RAG_EMBEDDING_MODEL
                )[:300],
                figures=figures,
                misses=misses,
            )

        if options["json"]:
            payload = report.as_dict()
            payload["corpus"] = {
                "collection": loaded.collection.name,
                "documents": loaded.documents,
                "ingested": loaded.ingested,
                "failed": loaded.failed,
                "ingest_seconds": round(ingest_seconds, 2),
                "search_seconds": round(search_seconds, 2),
            }
            if answer_metrics:
                payload["generator"] = generator
                payload["answers"] = vars(answer_metrics)
                payload["answer_questions"] = evaluation.answer_details(answers)
            self.stdout.write(json.dumps(payload, indent=2))
            return

        self.stdout.write(
            f"corpus: {loaded.documents} documents in {loaded.collection.name!r} "
            f"({loaded.ingested} ingested now, {len(loaded.failed)} failed, {ingest_seconds:.1f}s)"
        )
        for failure in loaded.failed:
            self.stdout.write(f"  failed {failure}")
        answerable = sum(q.answerable for q in question_set)
        self.stdout.write(
            f"questions: {len(question_set)} ({answerable} answerable, "
            f"{len(question_set) - answerable} unanswerable); searches took {search_seconds:.1f}s"
        )
        top_k = settings.RAG_SEARCH_TOP_K
        self.stdout.write(
            f"{'':<8} {'per passage':^32} | {'per distinct document':^32} | in top {top_k}"
        )
        self.stdout.write(
            f"{'mode':<8} {'hit@1':>6} {'hit@5':>6} {'MRR@10':>7} {'nDCG@10':>8}   | "
            f"{'hit@1':>6} {'hit@5':>6} {'MRR@10':>7} {'nDCG@10':>8}   |"
        )
        for mode, m in report.metrics.items():
            d = report.distinct_metrics[mode]
            self.stdout.write(
                f"{mode:<8} {m.hit_at_1:>6.3f} {m.hit_at_5:>6.3f} {m.mrr_at_10:>7.3f} "
                f"{m.ndcg_at_10:>8.3f}   | {d.hit_at_1:>6.3f} {d.hit_at_5:>6.3f} "
                f"{d.mrr_at_10:>7.3f} {d.ndcg_at_10:>8.3f}   | {report.in_context[mode]:.3f}"
            )
        self.stdout.write("top-1 similarity (vector):")
        for label, stats in (
            ("answerable", report.answerable_similarity),
            ("unanswerable", report.unanswerable_similarity),
        ):
            if stats and stats.count:
                self.stdout.write(
                    f"  {label:<12} n={stats.count:<3} mean={stats.mean:.3f} "
                    f"min={stats.min:.3f} max={stats.max:.3f}"
                )
            else:
                self.stdout.write(f"  {label:<12} n=0")
        if answer_metrics:
            self._print_answers(generator, answer_metrics)
        if options["details"]:
            self._details(report)
            if answers:
                self._answer_details(answers)

    def _print_answers(self, generator: str, m: evaluation.AnswerMetrics) -> None:
        self.stdout.write(f"answers ({generator}):")
        rows = [
            (f"answered (of {m.answerable} answerable)", m.answered),
            (f"declined (of {m.unanswerable} unanswerable)", m.declined),
            ("answer text contains the expected strings", m.text_contains),
            ("a cited passage contains them", m.citation_contains),
            ("cited the right document", m.cited_right_document),
            ("citation precision (cited documents relevant)", m.citation_precision),
        ]
        for label, value in rows:
            self.stdout.write(f"  {label:<48} {value:.3f}")
        self.stdout.write(
            f"  {'latency p50 / p95':<48} {m.latency_p50_s:.2f}s / {m.latency_p95_s:.2f}s"
        )

    @staticmethod
    def _retrieval_misses(report: evaluation.EvalReport) -> list[dict]:
        return [
            {
                "id": r.question.id,
                "kind": r.question.kind,
                "question": r.question.question,
                "mode": r.mode,
                "relevant": sorted(r.question.relevant),
                "ranked": list(evaluation.distinct(r.ranked))[:5],
            }
            for r in report.results
            if r.mode == "hybrid"
            and r.question.answerable
            and not evaluation.hit_at_k(r.ranked, r.question.relevant, 1)
        ]

    def _details(self, report: evaluation.EvalReport) -> None:
        for mode in report.metrics:
            misses = [
                r
                for r in report.results
                if r.mode == mode
                and r.question.answerable
                and not evaluation.hit_at_k(r.ranked, r.question.relevant, 1)
            ]
            self.stdout.write(f"{mode}: missed at 1 ({len(misses)}):")
            for r in misses:
                rank = next(
                    (i for i, name in enumerate(r.ranked, 1) if name in r.question.relevant), None
                )
                self.stdout.write(
                    f"  {r.question.id} [{r.question.kind}] want {r.question.doc} "
                    f"at {rank or '-'}; got {', '.join(r.ranked[:3])}"
                )

    def _answer_details(self, answers: list[evaluation.AnswerResult]) -> None:
        self.stdout.write("answers missed:")
        for row in evaluation.answer_misses(answers):
            self.stdout.write(
                f"  {row['id']} [{row['kind']}] {row['outcome']}; expected {row['expected']}; "
                f"cited {row['cited']}\n    Q: {row['question']}\n    A: {row['answer'][:300]}"
            )
