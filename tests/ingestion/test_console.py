"""The upload console through Django's test client: who may use it, creating collections,
uploads (accepted and rejected), the live status endpoint, retry, re-index and delete."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.models import AuditEvent
from ingestion import pipeline
from ingestion.models import Collection, Document
from tests.conftest import make_collection
from tests.documents import write_text

JSON = {"HTTP_ACCEPT": "application/json"}
OWLS = "Owls hunt at night. Their soft feathers let them fly almost silently over fields."


def signed_in(user: User, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.fixture
def staff(db) -> User:
    # A superuser manages every collection; other staff only those they may read (#10, see
    # tests/test_privacy_staff.py), and these tests' collections are restricted.
    return User.objects.create_user(
        "editor", password="a-long-test-password", is_staff=True, is_superuser=True
    )


@pytest.fixture
def manager(db) -> User:
    return User.objects.create_user("manager", password="a-long-test-password")


def upload(client: Client, collection: Collection, name: str, content: bytes):
    return client.post(
        reverse("console:upload", args=[collection.pk]),
        {"file": SimpleUploadedFile(name, content)},
        **JSON,
    )


# --- who may use it --------------------------------------------------------------------------
def test_anonymous_visitors_are_sent_to_sign_in(db):
    response = Client().get("/console/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_staff_without_console_rights_get_403(user):
    client = signed_in(user)
    assert client.get("/console/").status_code == 403
    assert client.get(reverse("console:status")).status_code == 403


def test_a_plain_user_cannot_upload_to_an_everyone_collection(user):
    collection = make_collection("Handbook", everyone=True)
    response = upload(signed_in(user), collection, "a.txt", b"Hello there.")
    assert response.status_code == 403
    assert not Document.objects.exists()


def test_a_manager_sees_and_uploads_to_only_their_collections(manager):
    mine = make_collection("Mine")
    mine.managers.add(manager)
    theirs = make_collection("Theirs")
    client = signed_in(manager)

    page = client.get("/console/").content.decode()
    assert "Mine" in page
    assert "Theirs" not in page
    assert "New collection" not in page, "only staff create collections"

    assert upload(client, theirs, "a.txt", b"Hello there.").status_code == 404
    assert upload(client, mine, "a.txt", b"Hello there.").status_code == 201
    assert client.post(reverse("console:create_collection"), {"name": "X"}).status_code == 403


# --- collections -----------------------------------------------------------------------------
def test_staff_create_a_collection_with_reader_groups(staff):
    group = Group.objects.create(name="Finance")
    response = signed_in(staff).post(
        reverse("console:create_collection"),
        {
            "name": "Budgets",
            "description": "Yearly budgets",
            "visibility": "restricted",
            "reader_groups": [group.pk],
        },
    )
    collection = Collection.objects.get(name="Budgets")
    assert response.status_code == 302
    assert response["Location"] == f"/console/?collection={collection.pk}"
    assert list(collection.reader_groups.all()) == [group]
    assert collection.created_by == staff
    assert AuditEvent.objects.filter(action="collection_created", user=staff).exists()


def test_a_duplicate_collection_name_is_shown_as_a_form_error(staff):
    make_collection("Budgets")
    response = signed_in(staff).post(
        reverse("console:create_collection"), {"name": "Budgets", "visibility": "everyone"}
    )
    assert response.status_code == 400
    assert "already exists" in response.content.decode()


# --- uploads ---------------------------------------------------------------------------------
def test_an_upload_is_registered_queued_and_audited(staff):
    collection = make_collection("Handbook")
    response = upload(signed_in(staff), collection, "travel.txt", b"Trains first, planes last.")

    assert response.status_code == 201
    body = response.json()
    document = Document.objects.get(pk=body["document"]["id"])
    assert body["created"] is True
    assert body["document"]["status"] == "queued"
    assert document.original_name == "travel.txt"
    assert document.uploaded_by == staff
    event = AuditEvent.objects.get(action="upload")
    assert event.document_ids == [document.pk]
    assert event.via == "web"


def test_the_same_file_twice_is_reported_as_already_there(staff):
    collection = make_collection("Handbook")
    client = signed_in(staff)
    upload(client, collection, "travel.txt", b"Trains first.")
    again = upload(client, collection, "copy.txt", b"Trains first.")
    assert again.status_code == 201
    assert again.json()["created"] is False
    assert Document.objects.count() == 1


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("empty.txt", b"", "empty"),
        (
            "program.exe",
            b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" * 20,
            "unsupported_type",
        ),
    ],
)
def test_rejected_uploads_say_why_per_file(staff, name, content, code):
    collection = make_collection("Handbook")
    response = upload(signed_in(staff), collection, name, content)
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert name in response.json()["error"]
    assert not Document.objects.exists()


def test_too_large_uploads_are_rejected(staff, settings):
    settings.RAG_MAX_UPLOAD_MB = 1
    collection = make_collection("Handbook")
    response = upload(signed_in(staff), collection, "big.txt", b"a" * (1024 * 1024 + 1))
    assert response.status_code == 400
    assert response.json()["code"] == "too_large"


def test_without_script_many_files_upload_in_one_form(staff):
    collection = make_collection("Handbook")
    response = signed_in(staff).post(
        reverse("console:upload", args=[collection.pk]),
        {"files": [SimpleUploadedFile("a.txt", b"First note."), SimpleUploadedFile("b.txt", b"")]},
        follow=True,
    )
    page = response.content.decode()
    assert Document.objects.filter(collection=collection).count() == 1
    assert "a.txt uploaded and queued" in page
    assert "b.txt is empty" in page


def test_uploads_need_a_csrf_token(staff):
    collection = make_collection("Handbook")
    client = signed_in(staff, enforce_csrf_checks=True)
    assert upload(client, collection, "a.txt", b"Hello.").status_code == 403


# --- status, counters, actions ---------------------------------------------------------------
def test_status_reports_counters_and_each_documents_state(staff, ingest_file, tmp_path):
    collection = make_collection("Handbook")
    ready = ingest_file(collection, write_text(tmp_path / "ready.txt", OWLS))
    client = signed_in(staff)
    queued_id = upload(client, collection, "queued.txt", b"A queued note.").json()["document"]["id"]

    status = client.get(reverse("console:status"), {"collection": collection.pk}).json()

    assert status["documents"][str(ready.pk)]["status"] == "ready"
    assert status["documents"][str(ready.pk)]["chunk_count"] == ready.chunk_count > 0
    assert status["documents"][str(queued_id)]["status"] == "queued"
    assert "ready.txt" in status["documents_html"]
    assert "queued.txt" in status["documents_html"]
    assert 'data-counter="queue">1<' in status["counters_html"]
    assert 'data-counter="ready">1<' in status["counters_html"]


def test_counters_cover_only_managed_collections(manager, ingest_file, tmp_path):
    mine = make_collection("Mine")
    mine.managers.add(manager)
    other = make_collection("Other")
    ingest_file(other, write_text(tmp_path / "o.txt", "Another team's note."))

    page = signed_in(manager).get("/console/").content.decode()
    assert 'data-counter="documents">0<' in page


def test_a_failed_document_shows_its_reason_and_can_be_retried(staff):
    collection = make_collection("Handbook")
    client = signed_in(staff)
    document_id = upload(client, collection, "a.txt", b"Some text.").json()["document"]["id"]
    Document.objects.filter(pk=document_id).update(status="failed", error="Could not parse page 3.")

    page = client.get("/console/").content.decode()
    assert "Could not parse page 3." in page
    assert "Retry" in page

    client.post(reverse("console:retry", args=[document_id]))
    document = Document.objects.get(pk=document_id)
    assert document.status == "queued"
    assert document.error == ""


def test_reindex_queues_every_document_of_the_collection(staff, ingest_file, tmp_path):
    collection = make_collection("Handbook")
    document = ingest_file(collection, write_text(tmp_path / "a.txt", "Owls hunt at night."))
    signed_in(staff).post(reverse("console:reindex", args=[collection.pk]))
    document.refresh_from_db()
    assert document.status == "queued"


def test_delete_says_what_it_removes_then_removes_it(staff, ingest_file, tmp_path):
    collection = make_collection("Handbook")
    document = ingest_file(collection, write_text(tmp_path / "a.txt", "Owls hunt at night."))
    client = signed_in(staff)

    confirm = client.get(reverse("console:delete", args=[document.pk])).content.decode()
    assert "a.txt" in confirm
    assert "indexed passage" in confirm
    assert "stored file" in confirm
    assert Document.objects.filter(pk=document.pk).exists(), "GET only asks"

    response = client.post(reverse("console:delete", args=[document.pk]))
    assert response.status_code == 302
    assert not Document.objects.filter(pk=document.pk).exists()
    assert AuditEvent.objects.get(action="delete").document_ids == [document.pk]


def test_a_manager_cannot_delete_from_another_collection(manager, ingest_file, tmp_path):
    mine = make_collection("Mine")
    mine.managers.add(manager)
    other = make_collection("Other")
    document = ingest_file(other, write_text(tmp_path / "o.txt", "Another team's note."))

    assert signed_in(manager).post(reverse("console:delete", args=[document.pk])).status_code == 404
    assert Document.objects.filter(pk=document.pk).exists()


def test_documents_and_names_from_uploads_are_escaped(staff):
    collection = make_collection("Handbook")
    upload(signed_in(staff), collection, "<img src=x onerror=alert(1)>.txt", b"Hello there.")
    page = signed_in(staff).get("/console/").content.decode()
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.txt" in page


# --- documents whose worker died -----------------------------------------------------------
def processing_since(document_id: int, seconds: float, claimed_by: str) -> None:
    Document.objects.filter(pk=document_id).update(
        status="processing",
        processing_started_at=timezone.now() - timedelta(seconds=seconds),
        claimed_by=claimed_by,
    )


def row(page: str, document_id: int) -> str:
    start = page.index(f'id="doc-{document_id}"')
    return page[start : page.index("</tr>", start)]


def test_a_document_being_processed_shows_for_how_long_and_offers_no_retry(staff):
    collection = make_collection("Handbook")
    client = signed_in(staff)
    document_id = upload(client, collection, "a.txt", b"Some text.").json()["document"]["id"]
    processing_since(document_id, 125, pipeline.process_identity())  # a live process: this one

    page = client.get("/console/").content.decode()
    status = client.get(reverse("console:status"), {"collection": collection.pk}).json()

    assert "Processing" in row(page, document_id)
    assert "for 2\xa0minutes" in row(page, document_id)
    assert "Retry" not in row(page, document_id)
    assert "Stalled" not in row(page, document_id)
    entry = status["documents"][str(document_id)]
    assert entry["stalled"] is False
    assert entry["status_label"] == "Processing"
    assert 125 <= entry["processing_seconds"] < 3600


def test_a_document_whose_worker_died_is_stalled_and_can_be_retried(staff):
    collection = make_collection("Handbook")
    client = signed_in(staff)
    document_id = upload(client, collection, "a.txt", b"Some text.").json()["document"]["id"]
    host = pipeline.process_identity().split(":")[0]
    processing_since(document_id, 30, f"{host}:999999999")  # a process of this host, now gone

    page = client.get("/console/").content.decode()
    status = client.get(reverse("console:status"), {"collection": collection.pk}).json()

    assert "Stalled" in row(page, document_id)
    assert "Retry" in row(page, document_id)
    assert 'data-status="stalled"' in row(page, document_id)
    assert 'data-counter="stalled">1 stalled<' in page
    entry = status["documents"][str(document_id)]
    assert entry["stalled"] is True
    assert entry["status_label"] == "Stalled"
    assert "Stalled" in status["documents_html"]
    assert "1 stalled" in status["counters_html"]

    client.post(reverse("console:retry", args=[document_id]))
    document = Document.objects.get(pk=document_id)
    assert document.status == "queued"
    assert document.unfinished_runs == 0


def test_a_document_processing_past_the_time_limit_is_stalled(staff, settings):
    settings.CELERY_TASK_TIME_LIMIT = 600
    collection = make_collection("Handbook")
    client = signed_in(staff)
    document_id = upload(client, collection, "a.txt", b"Some text.").json()["document"]["id"]
    processing_since(document_id, 601, "another-host:1234")  # where we cannot look at processes

    page = client.get("/console/").content.decode()

    assert "Stalled" in row(page, document_id)
    assert "Retry" in row(page, document_id)
    assert "10-minute limit" in row(page, document_id)
