"""The collections and documents API: listing, uploading, status, deletion and retry, through
DRF's test client with API keys and real rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from rest_framework.test import APIClient

from core import apikeys
from core.models import AuditEvent
from ingestion.models import Chunk, Collection, Document
from tests.conftest import make_collection
from tests.documents import FACT, write_markdown

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()


def client_for(user: User) -> APIClient:
    _, key = apikeys.create_key(user, "tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def manager(db) -> User:
    return User.objects.create_user("manager", password="a-long-test-password")


@pytest.fixture
def managed(manager) -> Collection:
    collection = make_collection("Engineering")
    collection.managers.add(manager)
    return collection


def markdown_upload(name: str = "notes.md", fact: str = FACT) -> SimpleUploadedFile:
    text = f"# Zephyr notes\n\n## Budget\n\n{fact}\n"
    return SimpleUploadedFile(name, text.encode(), content_type="text/markdown")


def upload(client: APIClient, collection: Collection, *files) -> object:
    return client.post(
        "/api/v1/documents/",
        {"collection": collection.pk, "files": list(files)},
        format="multipart",
    )


# --- collections --------------------------------------------------------------------------------


def test_collections_lists_only_readable_ones_with_counts_and_whether_you_manage_them(
    manager, managed
):
    make_collection("Board minutes")  # restricted, not granted to anyone
    everyone = make_collection("Handbook", everyone=True)
    response = client_for(manager).get("/api/v1/collections/")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [c["name"] for c in body["results"]] == ["Engineering", "Handbook"]
    by_name = {c["name"]: c for c in body["results"]}
    assert by_name["Engineering"]["can_manage"] is True
    assert by_name["Handbook"]["can_manage"] is False
    assert by_name["Handbook"]["id"] == everyone.pk
    assert by_name["Handbook"]["document_count"] == 0


def test_collections_are_paginated_in_a_stable_order(user):
    for index in range(5):
        make_collection(f"Shared {index}", everyone=True)
    client = client_for(user)
    first = client.get("/api/v1/collections/?page_size=2").json()
    second = client.get("/api/v1/collections/?page_size=2&page=2").json()
    assert first["count"] == 5
    assert first["next"]
    assert first["previous"] is None
    assert [c["name"] for c in first["results"]] == ["Shared 0", "Shared 1"]
    assert [c["name"] for c in second["results"]] == ["Shared 2", "Shared 3"]


def test_a_collection_you_cannot_read_is_not_found(user):
    hidden = make_collection("Board minutes")
    response = client_for(user).get(f"/api/v1/collections/{hidden.pk}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_staff_create_collections_and_manage_what_they_create(db):
    staff = User.objects.create_user("boss", password="a-long-test-password", is_staff=True)
    response = client_for(staff).post(
        "/api/v1/collections/",
        {"name": "Contracts", "description": "Signed contracts", "visibility": "restricted"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    created = Collection.objects.get(name="Contracts")
    assert response.json()["id"] == created.pk
    assert response.json()["can_manage"] is True
    assert created.created_by == staff
    assert AuditEvent.objects.filter(action="collection_created", user=staff).exists()


def test_other_users_may_not_create_collections(user):
    response = client_for(user).post("/api/v1/collections/", {"name": "Mine"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert not Collection.objects.filter(name="Mine").exists()


def test_a_duplicate_collection_name_is_a_field_error(admin_user):
    make_collection("Contracts")
    response = client_for(admin_user).post(
        "/api/v1/collections/", {"name": "contracts"}, format="json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert "name" in error["fields"]


# --- upload -------------------------------------------------------------------------------------


def test_a_manager_uploads_several_files_which_are_queued(manager, managed):
    response = upload(
        client_for(manager),
        managed,
        markdown_upload("a.md", "Alpha fact."),
        markdown_upload("b.md", "Beta fact."),
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["rejected"] == []
    assert [d["original_name"] for d in body["documents"]] == ["a.md", "b.md"]
    assert all(d["status"] == "queued" and d["created"] for d in body["documents"])
    documents = Document.objects.filter(collection=managed)
    assert documents.count() == 2
    assert all(d.uploaded_by == manager for d in documents)
    # One row per file, as every entry point records uploads.
    events = AuditEvent.objects.filter(action="upload")
    assert sorted(i for e in events for i in e.document_ids) == sorted(d.pk for d in documents)
    assert {e.via for e in events} == {"api"}


def test_uploading_the_same_bytes_again_returns_the_existing_document(manager, managed):
    client = client_for(manager)
    first = upload(client, managed, markdown_upload()).json()["documents"][0]
    again = upload(client, managed, markdown_upload("copy.md")).json()["documents"][0]
    assert again["id"] == first["id"]
    assert again["created"] is False
    assert Document.objects.count() == 1


def test_an_unsupported_file_type_is_415(manager, managed):
    binary = SimpleUploadedFile("tool.exe", b"MZ\x90\x00\x03" + bytes(range(256)) * 4)
    response = upload(client_for(manager), managed, binary)
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_type"
    assert "tool.exe" in error["message"]
    assert Document.objects.count() == 0


@override_settings(RAG_MAX_UPLOAD_MB=0)
def test_a_file_over_the_size_limit_is_413(manager, managed):
    response = upload(client_for(manager), managed, markdown_upload())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_an_empty_file_is_400_empty(manager, managed):
    response = upload(client_for(manager), managed, SimpleUploadedFile("empty.md", b""))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "empty"


def test_good_files_are_kept_and_bad_ones_reported_in_a_mixed_upload(manager, managed):
    response = upload(
        client_for(manager), managed, markdown_upload(), SimpleUploadedFile("empty.txt", b"")
    )
    assert response.status_code == 201
    body = response.json()
    assert len(body["documents"]) == 1
    assert body["rejected"] == [
        {"filename": "empty.txt", "code": "empty", "message": "empty.txt is empty."}
    ]


def test_uploading_needs_files_and_a_collection(manager, managed):
    response = client_for(manager).post("/api/v1/documents/", {}, format="multipart")
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"collection", "files"}


def test_readers_who_do_not_manage_a_collection_cannot_upload_to_it(user):
    handbook = make_collection("Handbook", everyone=True)
    response = upload(client_for(user), handbook, markdown_upload())
    assert response.status_code == 403
    assert Document.objects.count() == 0


def test_uploading_to_a_collection_you_cannot_read_looks_like_it_does_not_exist(user):
    hidden = make_collection("Board minutes")
    response = upload(client_for(user), hidden, markdown_upload())
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"collection": ["No such collection."]}


# --- list, get, delete, retry -------------------------------------------------------------------


def test_documents_are_listed_newest_first_and_filtered(manager, managed, ingest_file, tmp_path):
    other = make_collection("Handbook", everyone=True)
    ready = ingest_file(managed, write_markdown(tmp_path / "a.md", "A", [("One", FACT)]))
    older = ingest_file(other, write_markdown(tmp_path / "b.md", "B", [("Two", "Beta text.")]))
    Document.objects.filter(pk=older.pk).update(status="failed")
    client = client_for(manager)

    everything = client.get("/api/v1/documents/").json()
    assert [d["id"] for d in everything["results"]] == [older.pk, ready.pk]
    in_managed = client.get(f"/api/v1/documents/?collection={managed.pk}").json()
    assert [d["id"] for d in in_managed["results"]] == [ready.pk]
    failed = client.get("/api/v1/documents/?status=failed").json()
    assert [d["id"] for d in failed["results"]] == [older.pk]


def test_an_unknown_status_filter_is_a_field_error(user):
    response = client_for(user).get("/api/v1/documents/?status=lost")
    assert response.status_code == 400
    assert "status" in response.json()["error"]["fields"]


def test_a_document_shows_its_status_and_counts(manager, managed, ingest_file, tmp_path):
    document = ingest_file(managed, write_markdown(tmp_path / "a.md", "Zephyr", [("Budget", FACT)]))
    body = client_for(manager).get(f"/api/v1/documents/{document.pk}/").json()
    assert body["status"] == "ready"
    assert body["chunk_count"] == document.chunk_count > 0
    assert body["collection"] == managed.pk
    assert body["collection_name"] == "Engineering"
    assert body["size"] == Path(document.file.path).stat().st_size
    assert body["error"] == ""


def test_deleting_a_document_purges_its_chunks(manager, managed, ingest_file, tmp_path):
    document = ingest_file(managed, write_markdown(tmp_path / "a.md", "Zephyr", [("Budget", FACT)]))
    assert Chunk.objects.filter(document=document).exists()
    response = client_for(manager).delete(f"/api/v1/documents/{document.pk}/")
    assert response.status_code == 204
    assert not Document.objects.filter(pk=document.pk).exists()
    assert not Chunk.objects.filter(document_id=document.pk).exists()
    assert AuditEvent.objects.get(action="delete").document_ids == [document.pk]


def test_readers_cannot_delete_or_retry(user, ingest_file, tmp_path):
    handbook = make_collection("Handbook", everyone=True)
    document = ingest_file(handbook, write_markdown(tmp_path / "a.md", "Zephyr", [("B", FACT)]))
    client = client_for(user)
    assert client.delete(f"/api/v1/documents/{document.pk}/").status_code == 403
    assert client.post(f"/api/v1/documents/{document.pk}/retry/").status_code == 403
    assert Document.objects.get(pk=document.pk).status == "ready"


def test_retry_queues_a_failed_document_again(manager, managed, ingest_file, tmp_path):
    document = ingest_file(managed, write_markdown(tmp_path / "a.md", "Zephyr", [("B", FACT)]))
    Document.objects.filter(pk=document.pk).update(status="failed", error="parser crashed")
    response = client_for(manager).post(f"/api/v1/documents/{document.pk}/retry/")
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert response.json()["error"] == ""
    assert AuditEvent.objects.get(action="reingest").document_ids == [document.pk]


def test_no_credentials_is_401_with_the_error_shape(db):
    response = APIClient().get("/api/v1/documents/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "not_authenticated"
