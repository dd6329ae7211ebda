"""With a model configured: follow-ups rewritten into standalone queries by the model
(RAG_LLM_REWRITE) and HyDE query expansion (RAG_HYDE), each with a short timeout and a fallback
to what the CPU default does, against the stand-in chat server over real HTTP."""

from __future__ import annotations

import logging

import pytest

from ingestion.models import Chunk
from retrieval import query_expansion
from retrieval.answering import answer, rewrite_query
from retrieval.models import Message
from retrieval.search import search_collections

DEEP_COPY = "How do I make a deep copy of a nested list?"
FOLLOW_UP = "and what does its memo argument do?"
STANDALONE = "copy.deepcopy memo argument purpose"


def jobs(fake_llm, system: str) -> list:
    return [r for r in fake_llm.chat_requests if r.messages[0]["content"] == system]


@pytest.fixture
def scripted(fake_llm, settings):
    """The stand-in answers each kind of request in kind."""
    replies = {
        query_expansion.REWRITE_SYSTEM: f"Standalone query: “{STANDALONE}”\n",
        query_expansion.HYDE_SYSTEM: "",
    }
    fake_llm.answer = lambda body: replies.get(body["messages"][0]["content"], "Answer [1].")
    settings.RAG_LLM_QUERY_TIMEOUT = 1.0
    settings.RAG_LLM_REASONING_TOKENS = 0
    fake_llm.replies = replies
    return fake_llm


# --- rewriting follow-ups --------------------------------------------------------------------------
def test_the_model_rewrites_a_follow_up_from_the_conversation(dev_corpus, user, scripted, settings):
    settings.RAG_LLM_REWRITE = True

    first = answer(user, DEEP_COPY)
    assert jobs(scripted, query_expansion.REWRITE_SYSTEM) == []  # nothing to resolve yet
    conversation = Message.objects.get(pk=first.message_id).conversation
    second = answer(user, FOLLOW_UP, conversation=conversation)

    [job] = jobs(scripted, query_expansion.REWRITE_SYSTEM)
    shown = job.messages[1]["content"]
    assert f"User: {DEEP_COPY}" in shown
    assert "Assistant: Answer [1]." in shown
    assert shown.rstrip().endswith(f"Last question: {FOLLOW_UP}\n\nStandalone query:")
    assert job.body["stream"] is False
    assert job.body["max_tokens"] == 64
    assert Message.objects.get(pk=second.message_id).search_query == STANDALONE
    assert second.outcome == Message.Outcome.ANSWERED


@pytest.mark.parametrize("trouble", ["slow", "500", "an essay"])
def test_a_failing_rewrite_falls_back_to_the_rule_based_one(
    dev_corpus, user, scripted, settings, caplog, trouble
):
    expected = rewrite_query(FOLLOW_UP, [DEEP_COPY])  # the CPU default (RAG_LLM_REWRITE off)
    settings.RAG_LLM_REWRITE = True
    first = answer(user, DEEP_COPY)
    conversation = Message.objects.get(pk=first.message_id).conversation
    if trouble == "an essay":
        scripted.replies[query_expansion.REWRITE_SYSTEM] = "Well, " + "let me think. " * 40
    else:
        rewrite = query_expansion.REWRITE_SYSTEM
        scripted.trouble_for = lambda body: (
            (3.0 if trouble == "slow" else "500")
            if body["messages"][0]["content"] == rewrite
            else None
        )

    with caplog.at_level(logging.WARNING, logger="retrieval.query_expansion"):
        second = answer(user, FOLLOW_UP, conversation=conversation)

    assert expected != FOLLOW_UP  # the rule did add the previous question's terms
    assert Message.objects.get(pk=second.message_id).search_query == expected
    assert second.outcome == Message.Outcome.ANSWERED
    assert any("falling back" in r.getMessage() for r in caplog.records)


def test_without_the_setting_the_model_is_not_asked_to_rewrite(dev_corpus, user, scripted):
    first = answer(user, DEEP_COPY)
    conversation = Message.objects.get(pk=first.message_id).conversation
    answer(user, FOLLOW_UP, conversation=conversation)

    assert jobs(scripted, query_expansion.REWRITE_SYSTEM) == []
    assert len(scripted.chat_requests) == 2  # the two answers


# --- HyDE ----------------------------------------------------------------------------------------
@pytest.fixture
def bisect_passage(db, dev_corpus) -> Chunk:
    return Chunk.objects.filter(document=dev_corpus["bisect.html"]).order_by("ordinal")[1]


def test_hyde_searches_the_hypothetical_answer_too_and_fuses_it(
    db, dev_corpus, scripted, settings, bisect_passage
):
    ids = [dev_corpus["copy.html"].collection_id]
    plain = {p.chunk_id: p for p in search_collections(ids, DEEP_COPY, limit=50)}
    settings.RAG_HYDE = True
    # The model "imagines" a passage that is, word for word, one of the bisect page's.
    scripted.replies[query_expansion.HYDE_SYSTEM] = bisect_passage.text

    expanded = {p.chunk_id: p for p in search_collections(ids, DEEP_COPY, limit=50)}

    [job] = jobs(scripted, query_expansion.HYDE_SYSTEM)
    assert job.messages[1]["content"] == f"Question: {DEEP_COPY}"
    assert expanded[bisect_passage.pk].hyde_rank == 1
    before = plain[bisect_passage.pk].score if bisect_passage.pk in plain else 0.0
    assert expanded[bisect_passage.pk].score > before
    assert all(p.hyde_rank is None for p in plain.values())


@pytest.mark.parametrize("trouble", ["slow", "500"])
def test_a_failing_hyde_searches_the_question_alone(
    db, dev_corpus, scripted, settings, caplog, trouble
):
    ids = [dev_corpus["copy.html"].collection_id]
    plain = [(p.chunk_id, p.score) for p in search_collections(ids, DEEP_COPY)]
    settings.RAG_HYDE = True
    scripted.trouble_for = lambda body: 3.0 if trouble == "slow" else "500"

    with caplog.at_level(logging.WARNING, logger="retrieval.query_expansion"):
        passages = search_collections(ids, DEEP_COPY)

    assert [(p.chunk_id, p.score) for p in passages] == plain
    assert len(jobs(scripted, query_expansion.HYDE_SYSTEM)) == 1
    assert any("falling back" in r.getMessage() for r in caplog.records)


def test_hyde_is_off_by_default_and_never_used_by_full_text_search(
    db, dev_corpus, scripted, settings
):
    ids = [dev_corpus["copy.html"].collection_id]
    search_collections(ids, DEEP_COPY)
    settings.RAG_HYDE = True
    search_collections(ids, DEEP_COPY, mode="fts")

    assert scripted.requests == []
