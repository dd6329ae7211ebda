"""Answers stream under uvicorn (ASGI), the way ragsite runs in production: the synchronous
answer stream is stepped in Django's thread-sensitive worker thread, one event at a time: in the
web chat, on /api/v1/ask and on the OpenAI-compatible endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from playwright.sync_api import expect

from core import apikeys
from tests.conftest import database_url, make_collection, stop_worker
from tests.documents import FACT, write_markdown, write_pdf
from tests.e2e.conftest import PASSWORD, open_page, serve_asgi, sign_in
from tests.fakes.openai_server import MODEL_ID, FakeOpenAIServer

QUESTION = "What is the Zephyr project budget for 2027?"
ANSWER = "The Zephyr budget for 2027 is 4.2 million euros [1]."


def start_uvicorn(log: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """uvicorn serving ragsite.asgi against the test database, with `env` on top."""
    from django.conf import settings

    environment = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "RAG_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "RAG_EGRESS_GUARD": "1",
        **env,
    }
    return serve_asgi(environment, log)


@pytest.fixture
def held_model() -> Iterator[FakeOpenAIServer]:
    """The stand-in model: sends its first piece, then holds the rest until told to go on."""
    fake = FakeOpenAIServer(answer=ANSWER, hold=threading.Event()).start()
    yield fake
    fake.stop()


@pytest.fixture
def api_server(transactional_db, held_model, ingest_file, tmp_path) -> Iterator[dict]:
    cache.clear()
    user = User.objects.create_user("tooling", password=PASSWORD)
    collection = make_collection("Zephyr", everyone=True)
    ingest_file(
        collection,
        write_markdown(tmp_path / "zephyr.md", "Zephyr report", [("Budget", FACT)]),
    )
    _, key = apikeys.create_key(user, "sse client")
    log = tmp_path / "uvicorn.log"
    process, url = start_uvicorn(
        log,
        RAG_LLM_BASE_URL=held_model.base_url,
        RAG_LLM_MODEL=MODEL_ID,
        RAG_LLM_API_KEY="",
    )
    try:
        yield {"url": url, "key": key, "log": log}
    finally:
        held_model.hold.set()
        stop_worker(process)
    text = log.read_text()
    assert "SynchronousOnlyOperation" not in text, text[-3000:]
    assert "must consume synchronous iterators" not in text, text[-3000:]


ENDPOINTS = {
    "ask": ("/api/v1/ask", {"question": QUESTION, "stream": True}),
    "openai": (
        "/api/v1/openai/chat/completions",
        {"model": "ragsite", "stream": True, "messages": [{"role": "user", "content": QUESTION}]},
    ),
}


def _text_of(data: dict) -> str:
    if "text" in data:  # /ask: event: token {text}
        return data["text"]
    choices = data.get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content") or ""


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_api_streams_send_each_event_while_the_model_is_still_writing(
    api_server, held_model, endpoint
):
    path, body = ENDPOINTS[endpoint]
    headers = {"Authorization": f"Bearer {api_server['key']}", "Accept": "text/event-stream"}
    with httpx.stream(
        "POST", api_server["url"] + path, json=body, headers=headers, timeout=60
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        first = ""
        for line in lines:
            if line.startswith("data: {") and (first := _text_of(json.loads(line[6:]))):
                break
        # The first words are here, and the stand-in has not sent the rest yet.
        sent_when_first_arrived = held_model.pieces_sent
        held_model.hold.set()
        rest = [line for line in lines if line.startswith("data: ")]

    assert first
    assert ANSWER.startswith(first)
    assert sent_when_first_arrived == 1, "the answer was held back until the model finished"
    text = first + "".join(_text_of(json.loads(line[6:])) for line in rest if "{" in line)
    assert "4.2 million euros" in text
    assert held_model.pieces_sent > 1


def test_a_huge_history_neither_freezes_the_server_nor_is_kept(api_server, held_model):
    # The live finding: a million spaces in an earlier message took minutes of one process's
    # time (a quadratic regex), during which the sign-in page waited too. The timeouts below
    # are not a measurement: they are 1000 times what the request now takes.
    held_model.hold.set()
    headers = {"Authorization": f"Bearer {api_server['key']}"}
    body = {
        "model": "ragsite",
        "messages": [
            {"role": "user", "content": "Zephyr" + " " * 1_000_000 + "turbines?"},
            {"role": "assistant", "content": "It builds wind turbines."},
            {"role": "user", "content": QUESTION},
        ],
    }
    answers: list[httpx.Response] = []
    asking = threading.Thread(
        target=lambda: answers.append(
            httpx.post(
                api_server["url"] + "/api/v1/openai/chat/completions",
                json=body,
                headers=headers,
                timeout=30,
            )
        )
    )
    asking.start()
    sign_in_page = httpx.get(api_server["url"] + "/accounts/login/", timeout=30)
    asking.join(60)

    assert sign_in_page.status_code == 200
    assert answers, "no answer came back"
    assert answers[0].status_code == 200, answers
    completion = answers[0].json()
    assert "4.2 million euros" in completion["choices"][0]["message"]["content"]
    assert "turbines?" not in json.dumps(held_model.chat_requests[-1].messages)


@pytest.mark.e2e
def test_an_answer_streams_under_uvicorn(browser, asgi_server, ingest_file, tmp_path):
    User.objects.create_user("staff", password=PASSWORD)
    collection = make_collection("Zephyr", everyone=True)
    ingest_file(collection, write_pdf(tmp_path / "report.pdf", [("Budget", FACT)]))
    page = open_page(browser, asgi_server)
    try:
        sign_in(page, "staff")
        question = page.get_by_label("Your question")
        question.fill("What is the Zephyr project budget for 2027?")
        question.press("Enter")

        answer = page.locator("article.msg-assistant[data-outcome=answered]")
        expect(answer).to_have_count(1, timeout=60_000)
        expect(answer.locator(".answer-body")).to_contain_text("4.2 million euros")
        assert page.evaluate("window.__streamReads") >= 2, "events arrive as they are made"

        answer.locator("a.cite").first.click()
        expect(page.locator("#source-dialog mark")).to_contain_text("4.2 million euros")
        assert page.events.console_errors == []
    finally:
        page.context.close()
