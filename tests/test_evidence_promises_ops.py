"""Operational promises of the README, each with a test that fails when it breaks (#11): the
hourly retention task and the sign-in logs it purges, prompts kept out of the logs, the sign-in
lockout's cool-off and the client address behind proxies, the file count of one upload,
`reingest` by state and by ids, and the Redis visibility timeout reaching the worker."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from ingestion.models import Document
from retrieval.answering import answer
from tests.documents import FACT, write_markdown
from tests.fakes.openai_server import fake_llm  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "a-long-test-password"


def child_settings(env: dict[str, str], code: str) -> dict:
    """Run `code` in a fresh interpreter set up the way the worker is (same environment plus
    `env`, Django settings from the environment) and return the JSON it prints."""
    script = (
        "import json, django, os\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'ragsite.settings')\n"
        "django.setup()\n"
        "from django.conf import settings\n"
        "from ragsite.celery import app\n" + code
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "DJANGO_PROXY"))}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**base, "RAG_EGRESS_GUARD": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- retention ------------------------------------------------------------------------------------


def test_the_hourly_beat_entry_purges_sign_in_records_older_than_the_period(settings):
    """README: RAG_RETENTION_DAYS purges sign-in logs hourly. The beat entry names the task, it
    runs every hour, and running that task removes old axes records (successful sign-ins,
    failures, and a lockout counter nobody came back to) and keeps recent ones."""
    from ragsite.celery import app

    settings.RAG_RETENTION_DAYS = 30
    app.loader.import_default_modules()
    (entry,) = [e for e in app.conf.beat_schedule.values() if "purge" in e["task"]]
    assert entry["schedule"] == 3600.0
    old_time = timezone.now() - timedelta(days=31)
    for model in (AccessLog, AccessFailureLog, AccessAttempt):
        extra = {"get_data": "", "post_data": "", "failures_since_start": 1}
        fields = extra if model is AccessAttempt else {}
        for name in ("old-name", "new-name"):
            model.objects.create(
                username=name, ip_address="10.0.0.1", user_agent="x", http_accept="", **fields
            )
        model.objects.filter(username="old-name").update(attempt_time=old_time)

    app.tasks[entry["task"]].apply().get()

    for model in (AccessLog, AccessFailureLog, AccessAttempt):
        assert list(model.objects.values_list("username", flat=True)) == ["new-name"], model


# --- prompts stay out of the logs -----------------------------------------------------------------


QUESTION = "What is the Zephyr project budget for 2027?"


@pytest.mark.parametrize("log_prompts", [False, True])
def test_prompts_and_document_text_reach_the_logs_only_when_asked(
    log_prompts,
    settings,
    caplog,
    fake_llm,  # noqa: F811
    user,
    collection,
    ingest_file,
    tmp_path,
):
    document = ingest_file(
        collection, write_markdown(tmp_path / "plan.md", "Zephyr plan", [("Budget", FACT)])
    )
    assert document.status == Document.Status.READY, document.error
    settings.RAG_LOG_PROMPTS = log_prompts
    caplog.set_level(logging.DEBUG)

    answer(user, QUESTION)

    (request,) = fake_llm.chat_requests  # the prompt with the passage did go to the model
    assert QUESTION in json.dumps(request.messages)
    assert FACT in request.message("user")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert (QUESTION in logged) is log_prompts
    assert (FACT in logged) is log_prompts


# --- sign-in lockout ------------------------------------------------------------------------------


def login(client, password: str, **headers):
    return client.post("/accounts/login/", {"username": "staff", "password": password}, **headers)


def test_a_lockout_ends_after_the_cool_off_time(client, user, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, "wrong password", REMOTE_ADDR="10.0.0.7")
    assert login(client, PASSWORD, REMOTE_ADDR="10.0.0.7").status_code == 429

    # The cool-off passes (15 minutes by default): the failures are now older than it.
    cool_off = timedelta(hours=settings.AXES_COOLOFF_TIME)
    AccessAttempt.objects.update(attempt_time=timezone.now() - cool_off - timedelta(seconds=5))
    AccessFailureLog.objects.update(attempt_time=timezone.now() - cool_off - timedelta(seconds=5))

    assert login(client, PASSWORD, REMOTE_ADDR="10.0.0.7").status_code == 302


def test_behind_two_proxies_the_client_address_is_the_second_from_the_right(client, user, settings):
    """DJANGO_PROXY_COUNT=2, as settings.py reads it in a fresh process: the address the second
    proxy saw is the client; whatever the client wrote further left is ignored, so changing it
    neither escapes a lockout nor is recorded."""
    reported = child_settings(
        {"DJANGO_PROXY_COUNT": "2"},
        "print(json.dumps({'count': settings.AXES_IPWARE_PROXY_COUNT,"
        " 'order': settings.AXES_IPWARE_META_PRECEDENCE_ORDER}))",
    )
    assert reported["count"] == 2
    settings.AXES_IPWARE_PROXY_COUNT = reported["count"]
    settings.AXES_IPWARE_META_PRECEDENCE_ORDER = reported["order"]

    def chain(spoofed: str, client_address: str) -> dict:
        return {
            "HTTP_X_FORWARDED_FOR": f"{spoofed}, {client_address}, 10.0.0.2",
            "REMOTE_ADDR": "10.0.0.3",
        }

    for n in range(settings.AXES_FAILURE_LIMIT):
        login(client, "wrong password", **chain(f"6.6.6.{n}", "203.0.113.5"))

    assert login(client, PASSWORD, **chain("6.6.6.99", "203.0.113.5")).status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.5"}
    assert login(client, PASSWORD, **chain("6.6.6.6", "198.51.100.7")).status_code == 302


# --- uploads --------------------------------------------------------------------------------------


def test_an_upload_over_the_file_count_limit_is_refused_whole(settings, admin_user, collection):
    """RAG_MAX_FILES_PER_UPLOAD files in one request are taken; one more and nothing is."""
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    client = APIClient()
    client.force_login(admin_user)

    def upload(count: int, prefix: str):
        files = [
            SimpleUploadedFile(f"{prefix}{i}.txt", f"{prefix} {i} text.".encode())
            for i in range(count)
        ]
        return client.post(
            "/api/v1/documents/", {"collection": collection.pk, "files": files}, format="multipart"
        )

    refused = upload(4, "over")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "parse_error"
    assert "files" in refused.json()["error"]["message"].lower()
    assert Document.objects.count() == 0

    taken = upload(3, "within")
    assert taken.status_code in {201, 202}, taken.content
    assert Document.objects.count() == 3


# --- reingest -------------------------------------------------------------------------------------


def test_reingest_queues_failed_documents_or_the_ids_given_and_nothing_else(
    collection, ingest_file, tmp_path, task_queue, django_capture_on_commit_callbacks
):
    docs = [
        ingest_file(collection, write_markdown(tmp_path / f"{n}.md", n, [("A", f"{n} {FACT}")]))
        for n in ("alpha", "bravo", "charlie", "delta")
    ]
    assert {d.status for d in docs} == {Document.Status.READY}
    failed = [docs[0], docs[1]]
    Document.objects.filter(pk__in=[d.pk for d in failed]).update(status="failed", error="x")

    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("reingest", "--failed", stdout=out)
    assert sorted(task_queue.document_ids()) == sorted(d.pk for d in failed)
    assert out.getvalue().strip() == "Queued 2 documents."
    assert Document.objects.get(pk=docs[2].pk).status == Document.Status.READY

    task_queue_before = len(task_queue.document_ids())
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        # An id given twice, and one that does not exist, queue it once and nothing else.
        call_command("reingest", str(docs[3].pk), str(docs[3].pk), "999999", stdout=out)
    assert task_queue.document_ids()[task_queue_before:] == [docs[3].pk]
    assert out.getvalue().strip() == "Queued 1 documents."
    assert Document.objects.get(pk=docs[3].pk).status == Document.Status.QUEUED
    assert Document.objects.get(pk=docs[2].pk).status == Document.Status.READY


# --- Redis redelivery -----------------------------------------------------------------------------


def test_the_visibility_timeout_reaches_the_workers_celery_config():
    """On Redis, a message a killed worker never acknowledged comes back after
    RAG_VISIBILITY_TIMEOUT seconds (default: the task time limit + 300). The setting must be in
    the Celery app a worker process builds from its environment. (Waiting for a real redelivery
    takes at least a minute of Redis's restore cycle, so it is not done here.)"""
    code = "print(json.dumps(app.conf.broker_transport_options))"
    redis = {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"}

    explicit = child_settings({**redis, "RAG_VISIBILITY_TIMEOUT": "1234"}, code)
    default = child_settings({**redis, "RAG_TASK_TIME_LIMIT": "700"}, code)

    assert explicit["visibility_timeout"] == 1234
    assert default["visibility_timeout"] == 1000
