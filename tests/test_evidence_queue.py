""" "Queued" means a message for that document is on the queue: every entry point that queues work
(console, API and admin uploads, retry, re-index, reingest) really publishes the ingest task, after
the transaction commits, to this test's own broker folder (tests/conftest.py `task_queue`); the
message, run, makes the document ready."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from core import apikeys
from ingestion.models import Document
from tests.documents import FACT, write_markdown

pytestmark = pytest.mark.django_db

INGEST_TASK = "ingestion.tasks.ingest_document"


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api_client(user) -> APIClient:
    _, key = apikeys.create_key(user, "queue test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def markdown(name: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, f"# {name}\n\n## Budget\n\n{FACT}\n".encode())


def ids(*names: str) -> list[int]:
    return [Document.objects.get(original_name=name).pk for name in names]


def test_each_test_has_its_own_empty_queue_folder(task_queue):
    assert task_queue is not None
    assert task_queue.messages() == []
    assert task_queue.queue.startswith("ragsite-test-")


def test_an_upload_sends_nothing_until_the_transaction_commits(
    admin_user, collection, task_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        signed_in(admin_user).post(
            reverse("console:upload", args=[collection.pk]), {"file": markdown("a.md")}
        )
    assert Document.objects.get(original_name="a.md").status == "queued"
    assert task_queue.messages() == []  # registered, but not committed: nothing sent yet

    for callback in callbacks:
        callback()

    assert task_queue.messages() == [
        {"task": INGEST_TASK, "args": ids("a.md"), "queue": task_queue.queue}
    ]


def test_a_console_upload_queues_the_document(
    admin_user, collection, task_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        signed_in(admin_user).post(
            reverse("console:upload", args=[collection.pk]), {"file": markdown("a.md")}
        )

    assert task_queue.document_ids() == ids("a.md")


def test_an_api_upload_queues_every_file(
    admin_user, collection, task_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client(admin_user).post(
            "/api/v1/documents/",
            {"collection": collection.pk, "files": [markdown("a.md"), markdown("b.md")]},
            format="multipart",
        )

    assert response.status_code in {201, 202}, response.content[:300]
    assert sorted(task_queue.document_ids()) == sorted(ids("a.md", "b.md"))


def test_an_admin_upload_queues_every_file(
    admin_user, collection, task_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        signed_in(admin_user).post(
            reverse("admin:ingestion_document_upload"),
            {"collection": collection.pk, "files": [markdown("a.md"), markdown("b.md")]},
        )

    assert sorted(task_queue.document_ids()) == sorted(ids("a.md", "b.md"))


@pytest.mark.parametrize("entry_point", ["console", "api", "reingest --failed"])
def test_a_retry_queues_the_failed_document_again(
    entry_point,
    admin_user,
    collection,
    ingest_file,
    tmp_path,
    task_queue,
    django_capture_on_commit_callbacks,
):
    document = ingest_file(collection, write_markdown(tmp_path / "a.md", "Zephyr", [("B", FACT)]))
    Document.objects.filter(pk=document.pk).update(status="failed", error="parser crashed")
    assert task_queue.messages() == []

    with django_capture_on_commit_callbacks(execute=True):
        if entry_point == "console":
            signed_in(admin_user).post(reverse("console:retry", args=[document.pk]))
        elif entry_point == "api":
            response = api_client(admin_user).post(f"/api/v1/documents/{document.pk}/retry/")
            assert response.status_code == 202
        else:
            call_command("reingest", "--failed", stdout=io.StringIO())

    assert task_queue.document_ids() == [document.pk]
    assert Document.objects.get(pk=document.pk).status == "queued"


def test_a_reindex_queues_every_document_of_the_collection(
    admin_user, collection, ingest_file, tmp_path, task_queue, django_capture_on_commit_callbacks
):
    first = ingest_file(collection, write_markdown(tmp_path / "a.md", "Alpha", [("A", FACT)]))
    second = ingest_file(collection, write_markdown(tmp_path / "b.md", "Bravo", [("B", FACT)]))

    with django_capture_on_commit_callbacks(execute=True):
        signed_in(admin_user).post(reverse("console:reindex", args=[collection.pk]))

    assert sorted(task_queue.document_ids()) == sorted([first.pk, second.pk])


def test_the_queued_message_run_makes_the_document_ready(
    admin_user, collection, task_queue, django_capture_on_commit_callbacks
):
    from ragsite.celery import app

    with django_capture_on_commit_callbacks(execute=True):
        signed_in(admin_user).post(
            reverse("console:upload", args=[collection.pk]), {"file": markdown("a.md")}
        )
    (message,) = task_queue.messages()

    # What a worker does with it: the named task, with the message's arguments.
    app.tasks[message["task"]].apply(args=message["args"])

    document = Document.objects.get(original_name="a.md")
    assert document.status == "ready", document.error
    assert document.chunk_count > 0
