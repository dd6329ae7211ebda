"""Many streamed answers at once against the real ASGI server (uvicorn serving ragsite.asgi on
the test database), with stand-in models: no answer holds a database connection while the model
writes, and bench/load_answers.py's load, at a small size, ends without a server error."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection

from core import apikeys
from tests.conftest import database_url, load_bench, make_collection, stop_worker
from tests.documents import FACT, write_markdown
from tests.fakes.openai_server import MODEL_ID, FakeOpenAIServer

load = load_bench()
QUESTION = load.QUESTION
ANSWER = "The Zephyr budget for 2027 is 4.2 million euros [1]."
CONCURRENT = 30
POOL_SIZE = 4


@pytest.fixture
def site(transactional_db, ingest_file, tmp_path) -> Iterator[dict]:
    """The load user (with an API key) and a collection with one document, in the test database;
    `start(**env)` serves ragsite.asgi on it with the rate limits lifted (as the bench does)."""
    cache.clear()
    user = User.objects.create_user("load", password=load.PASSWORD)
    collection = make_collection("Zephyr", everyone=True)
    ingest_file(
        collection, write_markdown(tmp_path / "zephyr.md", "Zephyr report", [("Budget", FACT)])
    )
    _, key = apikeys.create_key(user, "load")
    servers: list = []
    log = tmp_path / "uvicorn.log"

    def start(**env: str) -> str:
        environment = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "RAG_MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "CELERY_BROKER_URL": "filesystem://",
            "RAG_BROKER_DIR": str(tmp_path / "broker"),
            "RAG_EGRESS_GUARD": "1",
            "RAG_API_RATE": "",
            "RAG_ASK_RATE": "",
            "RAG_LLM_MODEL": MODEL_ID,
            "RAG_LLM_API_KEY": "",
            **env,
        }
        process, url = load.serve("ragsite.asgi:application", environment, log)
        servers.append(process)
        return url

    info = {"user": user, "key": key, "collection": collection, "start": start, "log": log}
    try:
        yield info
    finally:
        for process in servers:
            stop_worker(process)
    if log.exists():
        text = log.read_text()
        assert "too many clients" not in text, text[-3000:]
        assert "Traceback" not in text, text[-3000:]


@pytest.fixture
def held_model() -> Iterator[FakeOpenAIServer]:
    """Sends each answer's first piece, then holds the rest until told to go on."""
    fake = FakeOpenAIServer(answer=ANSWER, hold=threading.Event()).start()
    yield fake
    fake.hold.set()
    fake.stop()


def _server_connections(application: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application]
        )
        return cursor.fetchone()[0]


def _ask(url: str, key: str, collection_id: int, on_first: Callable[[], None]) -> dict:
    """One streamed /api/v1/ask: its status, whether the first words came and it ended well."""
    body = {"question": QUESTION, "stream": True, "collection": collection_id}
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
    result = {"status": None, "first": False, "done": False}
    with httpx.stream(
        "POST", url + "/api/v1/ask", json=body, headers=headers, timeout=120
    ) as response:
        result["status"] = response.status_code
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "token" and not result["first"]:
                result["first"] = bool(json.loads(line[6:])["text"])
                on_first()
            elif line.startswith("data: ") and event == "done":
                result["done"] = True
    return result


def test_answers_give_their_database_connection_back_while_the_model_writes(site, held_model):
    # 30 answers mid-stream, the model holding back all but their first words, on a server whose
    # pool has 4 connections: holding one each, 4 would stream and 26 would wait for the pool.
    application = f"ragsite-load-{uuid.uuid4().hex[:8]}"
    url = site["start"](
        RAG_LLM_BASE_URL=held_model.base_url,
        RAG_DB_POOL_SIZE=str(POOL_SIZE),
        RAG_DB_POOL_TIMEOUT="60",
        PGAPPNAME=application,
    )
    held_model.hold.set()  # warm-up: the server loads its embedding model
    assert _ask(url, site["key"], site["collection"].pk, lambda: None)["done"]
    held_model.hold.clear()
    held_model.pieces_sent = 0

    lock = threading.Lock()
    first_words = 0
    all_started = threading.Event()

    def on_first() -> None:
        nonlocal first_words
        with lock:
            first_words += 1
            if first_words == CONCURRENT:
                all_started.set()

    results: list[dict] = []

    def ask() -> None:
        results.append(_ask(url, site["key"], site["collection"].pk, on_first))

    threads = [threading.Thread(target=ask, daemon=True) for _ in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    try:
        # The stand-in releases a held answer by itself after 15 s: well before that.
        assert all_started.wait(12), f"only {first_words} of {CONCURRENT} answers started"
        pieces_while_held = held_model.pieces_sent
        held_connections = _server_connections(application)
    finally:
        held_model.hold.set()
        for thread in threads:
            thread.join(60)

    assert pieces_while_held == CONCURRENT, "the model had been let go on before all started"
    assert held_connections <= POOL_SIZE
    assert [r["status"] for r in results] == [200] * CONCURRENT
    assert all(r["done"] for r in results), results


@pytest.mark.parametrize("surface", load.SURFACES)
def test_a_small_load_completes_without_server_errors(site, tmp_path, surface):
    model, model_url = load.serve_model(tmp_path / "model.log", delay=0.5, pieces=10)
    try:
        url = site["start"](RAG_LLM_BASE_URL=model_url + "/v1", RAG_LLM_MODEL="load-model")
        target = load.Target(url, site["key"], site["collection"].pk, "load")
        load.run_load(target, [surface], [1], pause=0)  # warm-up: the embedding model loads
        (result,) = load.run_load(target, [surface], [CONCURRENT], pause=0)
    finally:
        stop_worker(model)

    print(load.HEADER, load.format_row(result), sep="\n")
    assert result.server_errors == 0, result.failures
    assert dict(result.failures) == {}
    assert result.completed == CONCURRENT
