"""Operations endpoints: /healthz, /readyz (503 naming what failed), /metrics (figures that move
as documents are ingested and questions asked; refused without a token or an allowed address),
the request id in JSON log lines, and metrics merged across processes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections, transaction
from django.test import AsyncClient, Client
from prometheus_client.parser import text_string_to_metric_families

from core import logs, metrics
from core.audit import Via
from ingestion import services as ingestion_services
from ingestion.models import Document
from retrieval import answering, services
from tests.conftest import make_collection
from tests.documents import FACT, write_markdown
from tests.fakes.openai_server import fake_llm  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent


# --- helpers -------------------------------------------------------------------------------------


def scrape(client: Client | None = None, **headers) -> str:
    response = (client or Client()).get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return response.content.decode()


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name` with exactly these labels (0 when absent: not yet recorded)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def fact_document(tmp_path: Path) -> Path:
    return write_markdown(
        tmp_path / "zephyr.md",
        "Zephyr project",
        [("Budget", FACT), ("Team", "The Zephyr team has twelve engineers in Lyon.")],
    )


@pytest.fixture
def json_log() -> io.StringIO:
    """Records of every logger as settings.LOGGING writes them with RAG_LOG_FORMAT=json."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RequestIdFilter())
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


# --- /healthz ------------------------------------------------------------------------------------


def test_healthz_answers_without_the_database():
    # No django_db mark: any query in the view or its middleware would fail this test.
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


# --- /readyz -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_readyz_is_ready_with_the_database_broker_and_embedding_model():
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    assert body["failed"] == []
    assert set(body["checks"]) == {"database", "broker", "embedding_model"}  # no model URLs set
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["embedding_model"]["loaded"] in (True, False)


@pytest.mark.django_db
def test_readyz_fails_naming_the_database_when_it_is_unreachable(monkeypatch, refused_port):
    monkeypatch.setitem(connection.settings_dict, "HOST", "127.0.0.1")
    monkeypatch.setitem(connection.settings_dict, "PORT", str(refused_port))
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["failed"] == ["database"]
    assert body["checks"]["database"]["ok"] is False
    assert "cannot connect" in body["checks"]["database"]["error"]
    assert str(refused_port) not in response.content.decode()  # no addresses to strangers


@pytest.mark.django_db
def test_readyz_fails_when_the_database_is_not_migrated(monkeypatch):
    from ragsite import ops

    monkeypatch.setattr(ops, "MIGRATED_TABLE", "no_such_table")
    body = Client().get("/readyz").json()
    assert body["failed"] == ["database"]
    assert body["checks"]["database"]["error"] == "not migrated (manage.py migrate)"


@pytest.mark.django_db
def test_metrics_still_answer_when_the_database_fails(monkeypatch):
    from django.db import OperationalError
    from django.db.models import QuerySet

    def broken(*args, **kwargs):
        raise OperationalError("the server is gone")

    assert "ragsite_documents{" in scrape()
    monkeypatch.setattr(QuerySet, "values_list", broken)
    text = scrape()
    assert "ragsite_documents{" not in text
    assert "ragsite_queue_length" in text
    assert "ragsite_model_errors_total" in text or "# HELP ragsite_model_errors" in text


@pytest.mark.django_db
def test_readyz_fails_naming_the_model_server_when_it_is_down(settings, refused_port):
    settings.RAG_LLM_BASE_URL = f"http://127.0.0.1:{refused_port}/v1"
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["llm"]
    assert body["checks"]["llm"]["error"].startswith("unreachable")
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_readyz_is_ready_when_the_model_server_answers(settings, fake_llm):  # noqa: F811
    assert fake_llm.base_url == settings.RAG_LLM_BASE_URL
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"]["llm"]["ok"] is True
    assert [r.path for r in fake_llm.requests] == ["/v1/models"]
    fake_llm.failure = "500"
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["llm"]["error"] == "answered HTTP 500"


@pytest.mark.django_db
def test_readyz_checks_the_embedding_and_rerank_servers_too(settings, refused_port):
    settings.RAG_EMBEDDING_URL = f"http://127.0.0.1:{refused_port}/v1"
    settings.RAG_RERANKER_URL = f"http://127.0.0.1:{refused_port}"
    body = Client().get("/readyz").json()
    assert sorted(body["failed"]) == ["embedding_server", "reranker"]


@pytest.mark.django_db
def test_readyz_sends_nothing_to_an_endpoint_the_egress_rules_refuse(settings):
    # The egress guard of the test suite would fail the test if anything were sent there.
    settings.RAG_LLM_BASE_URL = "http://llm.example.com/v1"
    body = Client().get("/readyz").json()
    assert body["failed"] == ["llm"]
    assert "egress" in body["checks"]["llm"]["error"]


@pytest.mark.parametrize("loaded", [False, True])
@pytest.mark.django_db
def test_readyz_embedding_model_loaded_or_loadable(settings, tmp_path, monkeypatch, loaded):
    """Never loaded by the probe: passes when this process holds the model or its files are
    there; with neither, it fails."""
    from functools import _CacheInfo

    from ingestion import embedding

    monkeypatch.setattr(
        embedding.get_model, "cache_info", lambda: _CacheInfo(0, 0, 1, 1 if loaded else 0)
    )
    body = Client().get("/readyz").json()
    assert body["checks"]["embedding_model"]["ok"] is True
    assert body["checks"]["embedding_model"]["loaded"] is loaded

    settings.RAG_EMBEDDING_MODEL = str(tmp_path / "no-such-model")
    body = Client().get("/readyz").json()
    if loaded:  # this process already holds the model: it stays usable
        assert body["failed"] == []
    else:
        assert body["failed"] == ["embedding_model"]
        assert "RAG_EMBEDDING_MODEL" in body["checks"]["embedding_model"]["error"]


# --- /metrics: who may read it -------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_refused_from_an_address_not_allowed_without_the_token(settings):
    outsider = {"REMOTE_ADDR": "10.1.2.3"}
    assert Client().get("/metrics", **outsider).status_code == 403
    assert Client().get("/metrics").status_code == 200  # loopback, the default allow-list

    settings.RAG_METRICS_TOKEN = "s3cret-metrics-token"
    refused = Client().get("/metrics", **outsider)
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    wrong = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong", **outsider)
    assert wrong.status_code == 401
    assert "ragsite_" not in wrong.content.decode()
    right = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics-token", **outsider)
    assert right.status_code == 200

    settings.RAG_METRICS_TOKEN = ""
    settings.RAG_METRICS_ALLOW = ["10.0.0.0/8"]
    assert Client().get("/metrics", **outsider).status_code == 200
    assert Client().get("/metrics").status_code == 403  # loopback no longer listed


@pytest.mark.django_db
def test_metrics_ignore_a_forged_forwarded_for_without_a_proxy():
    response = Client().get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert response.status_code == 403


# --- /metrics: the figures move -----------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_follow_ingestion_search_and_answers(ingest_file, collection, user, tmp_path):
    before = scrape()
    document = ingest_file(collection, fact_document(tmp_path))
    assert document.status == Document.Status.READY
    after = scrape()

    def grew(name: str, by: float = 1, **labels: str) -> None:
        assert value(after, name, **labels) - value(before, name, **labels) == by, (name, labels)

    grew("ragsite_documents", state="ready")
    grew("ragsite_ingestion_documents_total", result="ready")
    grew("ragsite_ingestion_chunks_total", by=document.chunk_count)
    grew("ragsite_ingestion_chunks_per_second_count")
    for stage in ("parse", "chunk", "embed", "store"):
        grew("ragsite_ingestion_stage_seconds_count", stage=stage)
        assert value(after, "ragsite_ingestion_stage_seconds_sum", stage=stage) > 0
    assert value(after, "ragsite_queue_length") >= 0
    assert "ragsite_queue_length" in after

    before = after
    services.search_passages(user, "Zephyr budget", via=Via.API)
    result = answering.answer(user, "What is the Zephyr project budget for 2027?")
    assert result.outcome == "answered", result
    after = scrape()
    grew("ragsite_search_seconds_count", via="api")
    grew("ragsite_answers_total", outcome="answered", generator="extractive")
    grew("ragsite_answer_seconds_count", outcome="answered")
    assert value(after, "ragsite_answer_seconds_sum", outcome="answered") > value(
        before, "ragsite_answer_seconds_sum", outcome="answered"
    )

    # Feedback saves the answer again: it is not counted twice.
    message = answering.Message.objects.get(pk=result.message_id)
    services.set_feedback(user, message, 1)
    assert value(scrape(), "ragsite_answers_total", outcome="answered", generator="extractive") == (
        value(after, "ragsite_answers_total", outcome="answered", generator="extractive")
    )


@pytest.mark.django_db
def test_metrics_count_model_errors_and_unavailable_answers(
    ingest_file, collection, user, tmp_path, settings, refused_port
):
    ingest_file(collection, fact_document(tmp_path))
    settings.RAG_LLM_BASE_URL = f"http://127.0.0.1:{refused_port}/v1"
    settings.RAG_LLM_MODEL = "m"
    before = scrape()
    result = answering.answer(user, "What is the Zephyr project budget for 2027?")
    assert result.outcome == "model_unavailable"
    after = scrape()
    assert value(after, "ragsite_model_errors_total", endpoint="llm") > value(
        before, "ragsite_model_errors_total", endpoint="llm"
    )
    assert (
        value(after, "ragsite_answers_total", outcome="model_unavailable", generator="openai")
        - value(before, "ragsite_answers_total", outcome="model_unavailable", generator="openai")
        == 1
    )


# --- request ids and JSON logs -------------------------------------------------------------------


def test_the_request_id_is_kept_when_sane_else_replaced(json_log):
    client = Client()
    assert client.get("/healthz", HTTP_X_REQUEST_ID="edge-42.a:b")["X-Request-ID"] == (
        "edge-42.a:b"
    )
    for bad in ("", "has space", "line\nbreak", "x" * 200, '{"json":1}'):
        echoed = client.get("/healthz", HTTP_X_REQUEST_ID=bad)["X-Request-ID"]
        assert echoed != bad
        assert len(echoed) == 32
        assert int(echoed, 16) >= 0


@pytest.mark.django_db(transaction=True)
def test_json_log_lines_follow_a_question_into_the_answer_stream(
    json_log, ingest_file, collection, user, tmp_path, settings, refused_port
):
    """Under ASGI the answer is streamed from a worker thread (answer_stream.ThreadedStream):
    the model's failure, logged there, still carries the request's id."""
    ingest_file(collection, fact_document(tmp_path))
    settings.RAG_LLM_BASE_URL = f"http://127.0.0.1:{refused_port}/v1"
    settings.RAG_LLM_MODEL = "m"

    async def ask() -> tuple[str, bytes]:
        client = AsyncClient()
        await client.aforce_login(user)
        response = await client.post(
            "/ask/",
            {"question": "What is the Zephyr project budget for 2027?"},
            headers={"Accept": "text/event-stream", "X-Request-ID": "question-7"},
        )
        body = b"".join([chunk async for chunk in response.streaming_content])
        # The view ran in asgiref's thread for sync code: its connection is closed there.
        await sync_to_async(connections.close_all, thread_sensitive=True)()
        return response["X-Request-ID"], body

    echoed, body = asyncio.run(ask())
    assert echoed == "question-7"
    assert b"event: error" in body
    lines = json_lines(json_log)
    failures = [line for line in lines if "model unavailable" in line["message"]]
    assert failures, lines
    assert {line["request_id"] for line in failures} == {"question-7"}
    assert all(line["logger"] == "retrieval.answering" for line in failures)


def test_rag_log_format_json_makes_every_line_json():
    code = (
        "import django, logging; django.setup(); "
        "logging.getLogger('ragsite.check').warning('hello %s', 'there')"
    )
    env = {**os.environ, "RAG_LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "ragsite.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    mine = [line for line in lines if line["logger"] == "ragsite.check"]
    assert mine[0]["message"] == "hello there"
    assert mine[0]["level"] == "WARNING"
    assert mine[0]["request_id"] == "-"


# --- several processes ----------------------------------------------------------------------------


def test_metrics_add_up_across_processes_and_host_folders(tmp_path):
    """Two processes on one host and one on another (the worker's container) count; a fourth
    process reads them all, as /metrics does."""
    record = (
        "from core import metrics; assert metrics.multiprocess(); "
        "metrics.ANSWERS.labels(outcome='answered', generator='extractive').inc(); "
        "metrics.INGESTED_CHUNKS.inc(5)"
    )
    for host in ("web", "web", "worker"):
        folder = tmp_path / host
        folder.mkdir(exist_ok=True)
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
        subprocess.run([sys.executable, "-c", record], cwd=ROOT, env=env, check=True, timeout=60)
    text = read_all(tmp_path, tmp_path / "reader")
    assert value(text, "ragsite_answers_total", outcome="answered", generator="extractive") == 3
    assert value(text, "ragsite_ingestion_chunks_total") == 15

    # The exited processes' files fold into one per type; nothing is lost, now or next time.
    web = tmp_path / "web"
    assert metrics.compact(web) == 4  # a counter and a histogram file of each process
    assert sorted(p.name for p in web.glob("*.db")) == [
        "counter_archive.db",
        "histogram_archive.db",
    ]
    assert read_all(tmp_path, tmp_path / "reader") == text
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(web)}
    subprocess.run([sys.executable, "-c", record], cwd=ROOT, env=env, check=True, timeout=60)
    assert metrics.compact(web) == 2
    again = read_all(tmp_path, tmp_path / "reader")
    assert value(again, "ragsite_answers_total", outcome="answered", generator="extractive") == 4
    assert value(again, "ragsite_ingestion_chunks_total") == 20


def read_all(root: Path, reader: Path) -> str:
    """/metrics' merge of every host folder under `root`, by a process in multiprocess mode
    (whose own files, all zeros, go to `reader`)."""
    read = (
        "import sys; from pathlib import Path; from prometheus_client import generate_latest; "
        "from core import metrics; "
        "sys.stdout.write(generate_latest(metrics.registry(Path(sys.argv[1]))).decode())"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(reader)}
    reader.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-c", read, str(root)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


@pytest.mark.django_db(transaction=True)
def test_the_workers_figures_reach_the_shared_metrics_folder(worker, tmp_path, settings):
    """The Celery worker (another process, as in production) writes its ingestion figures under
    RAG_METRICS_DIR, where /metrics reads them. Other test runs may share the folder: at least."""
    reader = tmp_path / "reader"
    before = read_all(settings.RAG_METRICS_DIR, reader)
    collection = make_collection("Metrics")
    with transaction.atomic():  # the task is sent when this commits
        pk = ingestion_services.register_path(collection, fact_document(tmp_path)).document.pk
    [document] = worker.wait_for([pk])
    assert document.status == Document.Status.READY
    after = read_all(settings.RAG_METRICS_DIR, reader)
    ready = ("ragsite_ingestion_documents_total", {"result": "ready"})
    assert value(after, ready[0], **ready[1]) >= value(before, ready[0], **ready[1]) + 1
    assert value(after, "ragsite_ingestion_chunks_total") >= (
        value(before, "ragsite_ingestion_chunks_total") + document.chunk_count
    )


@pytest.mark.django_db
def test_queue_length_counts_the_messages_waiting(
    collection, tmp_path, task_queue, django_capture_on_commit_callbacks
):
    before = scrape()
    assert value(before, "ragsite_queue_length") == 0
    with django_capture_on_commit_callbacks(execute=True):
        ingestion_services.register_path(collection, fact_document(tmp_path))
    assert len(task_queue.messages()) == 1
    after = scrape()
    assert value(after, "ragsite_queue_length") == 1
    assert value(after, "ragsite_documents", state="queued") == (
        value(before, "ragsite_documents", state="queued") + 1
    )
