"""Reasoning models: the thinking (vLLM's `reasoning_content` / `reasoning` delta, or
`<think>…</think>` in the content) never reaches the reader, the stored answer or the citation
parser; the reader sees a "thinking" state; the answer budget leaves room for the thinking."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from retrieval import llm
from retrieval.answering import answer, stream_answer
from retrieval.models import Citation, Message

DEEP_COPY = "How do I make a deep copy of a nested list?"
# Thinking that would do harm if it leaked: a citation marker, words, and a tag-like fragment.
THOUGHTS = "The user wants copies. Passage [3] mentions SECRET-THOUGHT; maybe <b>bold</b> it."
ANSWER = "Use copy.deepcopy() [1]."
FORMS = ["reasoning_content", "reasoning", "tags"]


def run_filter(pieces: list[str]) -> tuple[str, int]:
    think = llm.ThinkFilter()
    out, thought = [], 0
    for piece in pieces:
        text, was_thinking = think.feed(piece)
        out.append(text)
        thought += was_thinking
    out.append(think.flush())
    return "".join(out), thought


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 100])
def test_think_blocks_are_removed_whatever_the_piece_boundaries(size):
    text = f"<think>{THOUGHTS}</think>\n\n{ANSWER} Then <think>again</think>done."
    pieces = [text[i : i + size] for i in range(0, len(text), size)]

    visible, thought = run_filter(pieces)

    assert visible == f"{ANSWER} Then done."
    assert thought >= 2


def test_the_tag_split_as_thi_nk_is_still_a_tag():
    assert run_filter(["<thi", "nk>hidden</thi", "nk>", "shown"]) == ("shown", 2)


def test_an_unclosed_think_yields_nothing_of_what_follows_it():
    assert run_filter(["Before. <think>never finished [2]", " still thinking"])[0] == "Before. "
    assert run_filter(["<think>all thinking, cut off by the token limit"])[0] == ""


@pytest.mark.parametrize(
    "text", ["a < b and <thin ice>", "ends with <", "ends with <thi", "</think> stray close"]
)
def test_text_that_only_looks_like_a_tag_is_kept(text):
    assert run_filter([text])[0] == text


def test_strip_thinking_for_whole_replies():
    assert llm.strip_thinking(f"<think>{THOUGHTS}</think>\nstandalone query") == "standalone query"


@pytest.fixture
def thinking_llm(fake_llm, settings):
    fake_llm.answer = ANSWER
    fake_llm.reasoning = THOUGHTS
    fake_llm.piece_chars = 3  # tags and markers split across pieces
    settings.RAG_LLM_MAX_ANSWER_TOKENS = 300
    settings.RAG_LLM_REASONING_TOKENS = 2000
    return fake_llm


@pytest.mark.parametrize("form", FORMS)
def test_the_answer_path_shows_and_stores_only_the_answer(dev_corpus, user, thinking_llm, form):
    thinking_llm.reasoning_form = form

    events = list(stream_answer(user, DEEP_COPY))
    result = answer(user, DEEP_COPY)

    kinds = [e.kind for e in events]
    assert kinds[0] == "meta"
    assert kinds[1] == "thinking"
    assert kinds.count("thinking") == 1
    assert "thinking" not in kinds[kinds.index("token") :]
    streamed = "".join(e.text for e in events if e.kind == "token")
    assert streamed == ANSWER
    assert result.text == ANSWER
    assert result.outcome == Message.Outcome.ANSWERED
    assert [c.number for c in result.citations] == [1]  # the [3] in the thinking is no citation
    stored = Message.objects.get(pk=result.message_id)
    assert stored.content == ANSWER
    assert list(Citation.objects.filter(message=stored).values_list("number", flat=True)) == [1]
    assert not Message.objects.filter(content__contains="SECRET-THOUGHT").exists()


def test_the_answer_budget_leaves_room_for_the_thinking(dev_corpus, user, thinking_llm):
    answer(user, DEEP_COPY)

    assert thinking_llm.chat_requests[0].body["max_tokens"] == 2300


def test_thinking_that_uses_the_whole_budget_is_reported_not_stored_as_an_empty_answer(
    dev_corpus, user, thinking_llm
):
    thinking_llm.answer = ""
    thinking_llm.finish_reason = "length"

    result = answer(user, DEEP_COPY)

    assert result.outcome == Message.Outcome.MODEL_UNAVAILABLE
    assert result.text == llm.UNAVAILABLE_MESSAGE
    assert "SECRET-THOUGHT" not in Message.objects.get(pk=result.message_id).content


@pytest.mark.parametrize("form", ["reasoning_content", "tags"])
def test_short_jobs_read_only_the_answer(thinking_llm, form):
    thinking_llm.reasoning_form = form
    thinking_llm.answer = "deep copy nested list python"

    reply = llm.get_generator().complete([{"role": "user", "content": "rewrite"}])

    assert reply == "deep copy nested list python"


@pytest.mark.parametrize("form", FORMS)
def test_the_web_stream_never_carries_the_thinking(dev_corpus, user, thinking_llm, form):
    thinking_llm.reasoning_form = form
    client = Client()
    client.force_login(user)

    response = client.post(
        reverse("web:ask"), {"question": DEEP_COPY}, HTTP_ACCEPT="text/event-stream"
    )
    body = b"".join(response.streaming_content).decode()

    assert "SECRET-THOUGHT" not in body
    assert "think>" not in body
    tokens = [
        json.loads(block.split("data: ", 1)[1])["text"]
        for block in body.split("\n\n")
        if block.startswith("event: token")
    ]
    assert "".join(tokens) == ANSWER


def test_the_chat_page_shows_a_thinking_state_until_the_first_words(user):
    client = Client()
    client.force_login(user)

    page = client.get(reverse("web:chat")).content.decode()

    template = page.split('id="tpl-answer"', 1)[1].split("</template>", 1)[0]
    assert "data-thinking" in template
    assert "Thinking…" in template


def test_a_model_whose_template_opens_the_thinking_shows_only_what_follows_think(
    dev_corpus, user, fake_llm, settings
):
    settings.RAG_LLM_STARTS_THINKING = True
    fake_llm.answer = f"{THOUGHTS}</think>\n\n{ANSWER}"  # no opening tag: the prompt had it
    fake_llm.piece_chars = 5

    result = answer(user, DEEP_COPY)

    assert result.text == ANSWER
    assert [c.number for c in result.citations] == [1]
    assert llm.strip_thinking(f"{THOUGHTS}</think>standalone") == "standalone"
