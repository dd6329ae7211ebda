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
    AnswerResult,
    CitedPassage,
    Question,
    distinct,
    hit_at_k,
    load_questions,
    ndcg_at_k,
    reciprocal_rank,
    summarize,
    summarize_answers,
)
from retrieval.models import EvalRun
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

    assert first.relevant == {"a.html", "b.html"}
    assert first.answerable
    assert first.answer_contains == ("here",)
    assert second.relevant == frozenset()
    assert not second.answerable


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
    {
        "id": "t1",
        "question": "How long should green tea steep?",
        "doc": "tea.md",
        "also": [],
        "answer_contains": ["two minutes"],
    },
    {
        "id": "t2",
        "question": "How often do I oil my bike chain?",
        "doc": "bikes.md",
        "answer_contains": ["300 kilometres"],
    },
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
    assert similarity["unanswerable"]["count"] == 1
    assert similarity["answerable"]["count"] == 2
    assert similarity["unanswerable"]["max"] < similarity["answerable"]["min"]
    assert first["corpus"]["ingested"] == 3
    assert first["corpus"]["documents"] == 3
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
    # Per passage | per distinct document | share with the right page among the passages.
    assert lines["hybrid"] == ["1.000"] * 4 + ["|"] + ["1.000"] * 4 + ["|", "1.000"]
    assert "unanswerable n=1" in text


@pytest.mark.django_db
def test_rag_eval_refuses_missing_inputs(small_eval_set, tmp_path):
    questions, corpus = small_eval_set

    with pytest.raises(CommandError, match="question file"):
        run_eval(str(tmp_path / "nope.jsonl"), "--corpus", str(corpus))
    with pytest.raises(CommandError, match="corpus folder"):
        run_eval(str(questions), "--corpus", str(tmp_path / "nowhere"))


# --- answer-level figures ---------------------------------------------------------------------------
def test_distinct_keeps_each_document_once_at_its_first_position():
    assert distinct(["a", "a", "b", "a", "c", "b"]) == ["a", "b", "c"]
    assert hit_at_k(distinct(["x", "x", "x", "a"]), {"a"}, 2) == 1.0  # a passage-level miss


def _result(qid, doc, expected, outcome, text, cited, latency=1.0):
    question = Question(qid, "?", doc, (), tuple(expected))
    return AnswerResult(
        question, outcome, text, tuple(CitedPassage(d, t) for d, t in cited), latency
    )


def test_answer_figures_are_counted_over_the_right_questions():
    results = [
        # Right text, cites the right page and a wrong one: precision 1/2.
        _result("a", "a.md", ["42"], "answered", "It is 42 [1]", [("a.md", "is 42"), ("b.md", "")]),
        # Declined although answerable: counts against answered, text and citation figures.
        _result("b", "b.md", ["x"], "no_answer", "I cannot answer", []),
        # Answered with the wrong text but a cited passage that holds it.
        _result("c", "c.md", ["blue", "sky"], "answered", "The sky [1]", [("c.md", "blue sky")]),
        # Unanswerable: one declined, one answered anyway.
        _result("d", None, [], "no_answer", "I cannot answer", [], latency=3.0),
        _result("e", None, [], "answered", "Something [1]", [("a.md", "")], latency=5.0),
    ]

    m = summarize_answers(results)

    assert (m.answerable, m.unanswerable) == (3, 2)
    assert m.answered == pytest.approx(2 / 3)
    assert m.declined == pytest.approx(1 / 2)
    assert m.text_contains == pytest.approx(1 / 3)  # "blue" is missing from c's text
    assert m.citation_contains == pytest.approx(2 / 3)
    assert m.cited_right_document == pytest.approx(2 / 3)
    assert m.citation_precision == pytest.approx((1 / 2 + 1) / 2)  # over a and c only
    assert m.latency_p50_s == 1.0
    assert m.latency_p95_s == 5.0


@pytest.mark.django_db
def test_rag_eval_answers_runs_the_answer_path_and_stores_the_run(small_eval_set, settings):
    settings.RAG_LLM_BASE_URL = ""  # the extractive CPU default
    questions, corpus = small_eval_set

    report = json.loads(run_eval(str(questions), "--corpus", str(corpus), "--answers", "--json"))

    assert report["generator"] == "extractive"
    answers = report["answers"]
    assert (answers["answerable"], answers["unanswerable"]) == (2, 1)
    assert answers["answered"] == 1.0
    assert answers["declined"] == 1.0
    assert answers["text_contains"] == 1.0
    assert answers["citation_precision"] == 1.0
    by_id = {q["id"]: q for q in report["answer_questions"]}
    assert "two minutes" in by_id["t1"]["answer"]
    assert by_id["t1"]["cited"] == ["tea.md"]
    assert by_id["t3"]["outcome"] == "no_answer"
    assert by_id["t3"]["cited"] == []
    assert report["distinct_metrics"]["hybrid"]["hit_at_1"] == 1.0
    run = EvalRun.objects.get()
    assert run.generator == "extractive"
    assert run.question_count == 3
    assert run.figures["answers"]["text_contains"] == 1.0
    assert run.misses == []
    # The evaluation account's conversations are not left behind.
    from retrieval.models import Conversation

    assert not Conversation.objects.exists()


@pytest.mark.django_db
def test_the_quality_page_charts_runs_for_admins_only(client, admin_user, user):
    for value in (0.5, 0.75):
        EvalRun.objects.create(
            questions_file="q.jsonl",
            corpus="corpus/",
            question_count=4,
            generator="extractive",
            embedding_model="minilm",
            figures={"answers": {"text_contains": value, "latency_p95_s": 0.8}},
            misses=[{"id": "q9", "question": "Where is <b>it</b>?", "outcome": "answered"}],
        )
    client.force_login(user)
    assert client.get("/console/quality/").status_code == 403

    client.force_login(admin_user)
    page = client.get("/console/quality/").content.decode()

    assert page.count("<polyline") == 1  # only the figure both runs have is charted
    assert "0.75" in page
    assert "0.50" in page
    run = EvalRun.objects.first()
    detail = client.get(f"/console/quality/{run.pk}/").content.decode()
    assert "q9" in detail
    assert "Where is &lt;b&gt;it&lt;/b&gt;?" in detail
