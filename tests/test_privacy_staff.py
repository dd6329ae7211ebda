"""Staff who are not superusers manage only the collections they may read: the console, the API
and the admin show nothing of another collection (names, titles, errors, counts), refuse to
change it, and an upload of a file it already holds says nothing about it (#10)."""

from __future__ import annotations

import hashlib

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from core.models import AuditEvent
from ingestion import permissions
from ingestion.models import Collection, Document
from tests.conftest import make_collection

pytestmark = pytest.mark.django_db

SECRET = b"The board will close the Leeds office in March."
JSON = {"HTTP_ACCEPT": "application/json"}


@pytest.fixture
def staff(db) -> User:
    cache.clear()
    return User.objects.create_user("editor", password="a-long-test-password", is_staff=True)


@pytest.fixture
def hidden(db) -> Document:
    """A restricted collection the staff member is not a reader of, holding a failed document."""
    board = make_collection("Board minutes")
    document = Document.objects.create(
        collection=board,
        original_name="leeds-closure.txt",
        title="Leeds closure plan",
        status=Document.Status.FAILED,
        error="Page 3 of leeds-closure could not be read",
        sha256=hashlib.sha256(SECRET).hexdigest(),
        size=len(SECRET),
    )
    return document


@pytest.fixture
def own(staff) -> Collection:
    return make_collection("Handbook", users=[staff])


def console(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_staff_manage_only_what_they_may_read(staff, hidden, own, admin_user):
    assert list(permissions.managed_collections(staff)) == [own]
    assert not permissions.can_manage_collection(staff, hidden.collection)
    assert permissions.can_manage_collection(admin_user, hidden.collection), "superusers: all"


def test_the_console_shows_nothing_of_an_unreadable_collection(staff, hidden, own):
    client = console(staff)
    page = client.get("/console/").content.decode()
    status = client.get(reverse("console:status"), {"collection": hidden.collection_id}).json()
    for text in (page, *[v for v in status.values() if isinstance(v, str)]):
        for secret in ("Board minutes", "leeds-closure", "Leeds closure", "Page 3 of"):
            assert secret not in text
    assert str(hidden.pk) not in status["documents"]
    assert 'data-counter="failed">0<' in page, "counters leave it out too"


@pytest.mark.parametrize(
    ("name", "method"),
    [("console:retry", "post"), ("console:delete", "get"), ("console:delete", "post")],
)
def test_the_console_refuses_to_act_on_its_documents(staff, hidden, own, name, method):
    response = getattr(console(staff), method)(reverse(name, args=[hidden.pk]))
    assert response.status_code == 404
    hidden.refresh_from_db()
    assert hidden.status == Document.Status.FAILED
    assert not AuditEvent.objects.exists()


def test_the_console_refuses_to_reindex_it(staff, hidden, own):
    response = console(staff).post(reverse("console:reindex", args=[hidden.collection_id]))
    assert response.status_code == 404
    hidden.refresh_from_db()
    assert hidden.status == Document.Status.FAILED


def test_a_duplicate_upload_says_nothing_about_what_is_there(staff, hidden, own):
    """The same bytes as the hidden document, and a new file: the same answer for both."""
    client = console(staff)
    answers = [
        client.post(
            reverse("console:upload", args=[hidden.collection_id]),
            {"file": SimpleUploadedFile(name, content)},
            **JSON,
        )
        for name, content in (("copy.txt", SECRET), ("new.txt", b"Something else entirely."))
    ]
    assert [a.status_code for a in answers] == [404, 404]
    assert answers[0].content == answers[1].content
    assert Document.objects.count() == 1


def test_the_api_answers_as_for_a_collection_that_does_not_exist(staff, hidden, own):
    client = APIClient()
    client.force_login(staff)
    upload = client.post(
        "/api/v1/documents/",
        {"collection": hidden.collection_id, "files": [SimpleUploadedFile("copy.txt", SECRET)]},
        format="multipart",
    )
    unknown = client.post(
        "/api/v1/documents/",
        {"collection": 999_999, "files": [SimpleUploadedFile("copy.txt", SECRET)]},
        format="multipart",
    )
    assert upload.status_code == unknown.status_code == 400
    assert upload.json() == unknown.json()
    assert client.delete(f"/api/v1/documents/{hidden.pk}/").status_code == 404
    assert client.post(f"/api/v1/documents/{hidden.pk}/retry/").status_code == 404
    listed = client.get("/api/v1/collections/").json()["results"]
    assert [c["name"] for c in listed] == ["Handbook"]
    assert listed[0]["can_manage"] is True
    assert Document.objects.count() == 1


def test_reading_access_brings_managing_back(staff, hidden, own):
    hidden.collection.reader_users.add(staff)
    response = console(staff).post(reverse("console:retry", args=[hidden.pk]))
    assert response.status_code == 302
    hidden.refresh_from_db()
    assert hidden.status == Document.Status.QUEUED
