"""Answer benchmark: the extractive CPU answer's latency (p50/p95) next to the search alone, on the
same questions over the dev evaluation corpus, through the real answer path (stored conversation,
citations, audit), as the API runs it.

Run as `.venv/bin/python bench/answer_bench.py [--rounds 3]`. The corpus is loaded into the
rag_eval scratch collection (reused between runs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")

import django  # noqa: E402

from ragsite import bootstrap  # noqa: E402

bootstrap.prepare()  # the embedded database, as every entry point starts it
django.setup()

from django.conf import settings  # noqa: E402

from retrieval import answering, evaluation  # noqa: E402
from retrieval.models import Conversation  # noqa: E402
from retrieval.search import search_collections  # noqa: E402

EVAL_DIR = Path(settings.BASE_DIR).parent / "shared" / "eval" / "dev"
EVAL_COLLECTION = "rag-eval scratch"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="times each question is asked")
    parser.add_argument(
        "--collection", default=EVAL_COLLECTION, help="collection the corpus is (or goes) in"
    )
    args = parser.parse_args()
    if not (EVAL_DIR / "corpus").is_dir():
        print(f"dev eval set not found at {EVAL_DIR}; answer benchmark skipped")
        return
    settings.RAG_LLM_BASE_URL = ""  # the extractive CPU default is what this measures
    loaded = evaluation.ingest_corpus(EVAL_DIR / "corpus", args.collection)
    questions = [
        q.question
        for name in ("questions.jsonl", "questions-hard.jsonl")
        for q in evaluation.load_questions(EVAL_DIR / name)
    ]
    user = evaluation.eval_user(loaded.collection)
    collection_ids = [loaded.collection.pk]
    # Warm-up: load the model and fill the caches a long-running server has warm.
    answering.answer(user, questions[0], collection_id=loaded.collection.pk, via="cli")
    search_times: list[float] = []
    answer_times: list[float] = []
    try:
        for _ in range(args.rounds):
            for question in questions:
                started = time.perf_counter()
                search_collections(collection_ids, question)
                search_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                answering.answer(user, question, collection_id=loaded.collection.pk, via="cli")
                answer_times.append(time.perf_counter() - started)
    finally:
        Conversation.objects.filter(user=user).delete()
    print(
        f"{len(questions)} questions x {args.rounds} over {loaded.documents} documents "
        f"(top {settings.RAG_SEARCH_TOP_K} passages)"
    )
    print(f"{'':<28} {'p50':>8} {'p95':>8}")
    for label, values in (
        ("search alone", search_times),
        ("extractive answer (whole)", answer_times),
    ):
        p50 = evaluation.percentile(values, 0.5) * 1000
        p95 = evaluation.percentile(values, 0.95) * 1000
        print(f"{label:<28} {p50:>6.0f}ms {p95:>6.0f}ms")


if __name__ == "__main__":
    main()
