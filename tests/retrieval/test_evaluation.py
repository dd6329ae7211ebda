"""Retrieval evaluation: the metric functions, question files, and `manage.py rag_eval` over a
small corpus (loaded once, reused on the next run)."""

from __future__ import annotations

import json
import math
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from ingestion.models import Collection, Document
from retrieval.evaluation import (
    hit_at_k,
    load_questions,
    ndcg_at_k,
    reciprocal_rank,
    summarize,
)
from tests.documents import write_markdown


# --- metrics -------------------------------------------------------------------------------------
def test_hit_at_k_looks_only_at_the_first_k_results():
    ranked = ["a.html", "b.html", "c.html"]

    assert hit_at_k(ranked, {"a.html"}, 1) == 1.0
    assert hit_at_k(ranked, {"c.html"}, 2) == 0.0
    assert hit_at_k(ranked, {"c.html"}, 3) == 1.0
    assert hit_at_k(ranked, {"x.html", "b.html"}, 5) == 1.0  # any relevant page counts
    assert hit_at_k([], {"a.html"}, 5) == 0.0


def test_reciprocal_rank_is_one_over_the_first_relevant_position_within_the_cutoff():
    ranked = ["a", "a", "b", "c"]

    assert reciprocal_rank(ranked, {"a"}) == 1.0
    assert reciprocal_rank(ranked, {"b", "c"}) == pytest.approx(1 / 3)
    assert reciprocal_rank(ranked, {"c"}, k=3) == 0.0
    assert reciprocal_rank(ranked, {"z"}) == 0.0


def test_ndcg_credits_each_relevant_document_once():
    # One relevant page found second: 1/log2(3), ideal 1.
    assert ndcg_at_k(["x", "a", "a", "a"], {"a"}) == pytest.approx(1 / math.log2(3))
    # Repeating a relevant page does not raise the score above a single hit in first place.
    assert ndcg_at_k(["a", "a", "a"], {"a"}) == pytest.approx(1.0)
    # Two relevant pages, only one found first: 1 / (1 + 1/log2(3)).
    assert ndcg_at_k(["a", "x"], {"a", "b"}) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(["b", "a"], {"a", "b"}) == pytest.approx(1.0)
    assert ndcg_at_k(["x"] * 10 + ["a"], {"a"}) == 0.0  # past the cutoff
    assert ndcg_at_k(["a"], set()) == 0.0


def test_summarize_averages_over_answerable_questions_only():
    metrics = summarize(
        [
            (["a", "b"], {"a"}),  # hit at 1
            (["x", "y", "b"], {"b"}),  # hit at 3
            (["q"], set()),  # unanswerable: not counted
        ]
    )

    assert metrics.questions == 2
    assert metrics.hit_at_1 == 0.5
    assert metrics.hit_at_5 == 1.0
    assert metrics.mrr_at_10 == pytest.approx((1 + 1 / 3) / 2)
    assert metrics.ndcg_at_10 == pytest.approx((1 + 1 / math.log2(4)) / 2)


def test_summarize_of_nothing_is_zero():
    assert summarize([]).questions == 0
    assert summarize([(["a"], set())]).hit_at_5 == 0.0


def test_question_files_name_the_answering_page_or_null(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text(
        '{"id": "q1", "question": "Where?", "doc": "a.html", "also": ["b.html"], '
        '"answer_contains": ["here"], "kind": "fact"}\n'
        "\n"
        '{"id": "q2", "question": "Unknowable?", "doc": null, "answer_contains": []}\n'
    )

    first, second = load_questions(path)

    assert first.relevant == {"a.html", "b.html"} and first.answerable
    assert first.answer_contains == ("here",)
    assert second.relevant == frozenset() and not second.answerable


def test_a_malformed_question_line_is_reported_with_its_line_number(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text('{"id": "q1", "question": "ok", "doc": null}\n{"id": "q2"}\n')

    with pytest.raises(ValueError, match=r"questions.jsonl:2"):
        load_questions(path)


# --- manage.py rag_eval ------------------------------------------------------------------------------
PAGES = {
    "tea.md": ("Brewing tea", [("Steeping", "Green tea steeps for two minutes at 80 degrees.")]),
    "bikes.md": ("Bicycle care", [("Chains", "Oil the bicycle chain every 300 kilometres.")]),
    "taxes.md": ("Expense claims", [("Receipts", "Submit travel receipts within 30 days.")]),
}
QUESTIONS = [
    {"id": "t1", "question": "How long should green tea steep?", "doc": "tea.md", "also": []},
    {"id": "t2", "question": "How often do I oil my bike chain?", "doc": "bikes.md"},
    {"id": "t3", "question": "Who won the 1998 chess olympiad?", "doc": None},
]


@pytest.fixture
def small_eval_set(tmp_path) -> tuple[Path, Path]:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, (title, sections) in PAGES.items():
        write_markdown(corpus / name, title, sections)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return questions, corpus


def run_eval(*args: str) -> str:
    out = StringIO()
    call_command("rag_eval", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_rag_eval_reports_each_mode_and_reuses_the_loaded_corpus(small_eval_set):
    questions, corpus = small_eval_set

    first = json.loads(run_eval(str(questions), "--corpus", str(corpus), "--json"))
    second = json.loads(run_eval(str(questions), "--corpus", str(corpus), "--json"))

    assert set(first["metrics"]) == {"vector", "fts", "hybrid"}
    for mode in ("vector", "hybrid"):
        assert first["metrics"][mode]["questions"] == 2  # the unanswerable one is left out
        assert first["metrics"][mode]["hit_at_1"] == 1.0
        assert first["metrics"][mode]["mrr_at_10"] == 1.0
    similarity = first["top1_similarity"]
    assert similarity["unanswerable"]["count"] == 1 and similarity["answerable"]["count"] == 2
    assert similarity["unanswerable"]["max"] < similarity["answerable"]["min"]
    assert first["corpus"]["ingested"] == 3 and first["corpus"]["documents"] == 3
    assert second["corpus"]["ingested"] == 0  # same bytes already there: nothing re-ingested
    assert second["metrics"] == first["metrics"]
    scratch = Collection.objects.get(name=first["corpus"]["collection"])
    assert scratch.visibility == Collection.Visibility.RESTRICTED
    assert set(scratch.documents.values_list("original_name", flat=True)) == set(PAGES)
    assert not scratch.documents.exclude(status=Document.Status.READY).exists()


@pytest.mark.django_db
def test_rag_eval_prints_a_readable_table(small_eval_set):
    questions, corpus = small_eval_set

    text = run_eval(str(questions), "--corpus", str(corpus), "--details")

    assert "corpus: 3 documents" in text
    assert "questions: 3 (2 answerable, 1 unanswerable)" in text
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert lines["hybrid"] == ["1.000", "1.000", "1.000", "1.000"]
    assert "unanswerable n=1" in text


@pytest.mark.django_db
def test_rag_eval_refuses_missing_inputs(small_eval_set, tmp_path):
    questions, corpus = small_eval_set

    with pytest.raises(CommandError, match="question file"):
        run_eval(str(tmp_path / "nope.jsonl"), "--corpus", str(corpus))
    with pytest.raises(CommandError, match="corpus folder"):
        run_eval(str(questions), "--corpus", str(tmp_path / "nowhere"))
