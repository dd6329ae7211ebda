"""The Django admin: multi-file upload through the service, filters, bulk retry and delete."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from core.models import AuditEvent
from ingestion.models import Document
from tests.conftest import make_collection

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in(client, admin_user):
    client.force_login(admin_user)
    return client


def test_admin_uploads_many_files_at_once(admin_client_logged_in, collection):
    files = [
        SimpleUploadedFile("a.md", b"# Alpha\n\nAlpha text about apples."),
        SimpleUploadedFile("b.txt", b"Bravo text about bananas."),
        SimpleUploadedFile("c.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 32),
    ]
    response = admin_client_logged_in.post(
        reverse("admin:ingestion_document_upload"),
        {"collection": collection.pk, "files": files},
        follow=True,
    )

    assert response.status_code == 200
    assert sorted(Document.objects.values_list("original_name", flat=True)) == ["a.md", "b.txt"]
    assert all(d.status == "queued" for d in Document.objects.all())
    text = response.content.decode()
    assert "Queued: a.md" in text
    assert "Rejected: c.png: unsupported file type" in text


def test_document_list_filters_by_status_and_collection(
    admin_client_logged_in, collection, tmp_path, ingest_file
):
    path = tmp_path / "n.md"
    path.write_text("# Notes\n\nSome notes about the admin.")
    document = ingest_file(collection, path)

    response = admin_client_logged_in.get(
        reverse("admin:ingestion_document_changelist"),
        {"status__exact": "ready", "collection__id__exact": collection.pk},
    )
    assert document.title in response.content.decode()
    empty = admin_client_logged_in.get(
        reverse("admin:ingestion_document_changelist"), {"status__exact": "failed"}
    )
    assert document.title not in empty.content.decode()


def test_bulk_delete_action_removes_documents_and_chunks(
    admin_client_logged_in, collection, tmp_path, ingest_file
):
    path = tmp_path / "n.md"
    path.write_text("# Notes\n\nSome notes to delete.")
    document = ingest_file(collection, path)

    admin_client_logged_in.post(
        reverse("admin:ingestion_document_changelist"),
        {"action": "delete_documents", "_selected_action": [document.pk]},
    )

    assert not Document.objects.filter(pk=document.pk).exists()


# --- permissions and the audit log (#10) ------------------------------------------------------
def staff_with(*codenames: str, username: str = "clerk"):
    user = User.objects.create_user(username, password="a-long-test-password", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def stored(collection, tmp_path, ingest_file) -> Document:
    path = tmp_path / "n.md"
    path.write_text("# Notes\n\nSome notes about the admin.")
    return ingest_file(collection, path)


def signed_in(client, user):
    client.force_login(user)
    return client


def admin_requests(document: Document) -> dict:
    """Each way the admin changes documents: (method, url, data)."""
    changelist = reverse("admin:ingestion_document_changelist")
    return {
        "upload": (
            reverse("admin:ingestion_document_upload"),
            {
                "collection": document.collection_id,
                "files": [SimpleUploadedFile("new.txt", b"Fresh text about pears.")],
            },
        ),
        "retry": (changelist, {"action": "retry", "_selected_action": [document.pk]}),
        "delete_documents": (
            changelist,
            {"action": "delete_documents", "_selected_action": [document.pk]},
        ),
        "delete_view": (
            reverse("admin:ingestion_document_delete", args=[document.pk]),
            {"post": "yes"},
        ),
        "reindex": (
            reverse("admin:ingestion_collection_changelist"),
            {"action": "reindex", "_selected_action": [document.collection_id]},
        ),
    }


@pytest.mark.parametrize("name", ["upload", "retry", "delete_documents", "delete_view", "reindex"])
def test_a_view_only_staff_member_is_refused_every_change(client, stored, name):
    viewer = staff_with("view_document", "view_collection")
    url, data = admin_requests(stored)[name]
    before = Document.objects.get(pk=stored.pk)

    response = signed_in(client, viewer).post(url, data)

    assert response.status_code == 403
    after = Document.objects.filter(pk=stored.pk).first()
    assert after is not None
    assert after.status == before.status == "ready"
    assert Document.objects.count() == 1
    assert not AuditEvent.objects.filter(via="admin").exists()


def test_a_view_only_staff_member_is_not_offered_the_actions(client, stored):
    viewer = staff_with("view_document", "view_collection")
    page = signed_in(client, viewer).get(reverse("admin:ingestion_document_changelist"))
    text = page.content.decode()
    assert page.status_code == 200
    assert stored.title in text
    assert 'value="retry"' not in text
    assert 'value="delete_documents"' not in text
    assert "Upload documents" not in text


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("upload", "upload"),
        ("retry", "reingest"),
        ("delete_documents", "delete"),
        ("delete_view", "delete"),
        ("reindex", "reingest"),
    ],
)
def test_every_admin_change_writes_one_audit_row(client, stored, name, action):
    editor = staff_with(
        "view_document",
        "add_document",
        "change_document",
        "delete_document",
        "view_collection",
        "change_collection",
    )
    stored.collection.reader_users.add(editor)
    url, data = admin_requests(stored)[name]

    response = signed_in(client, editor).post(url, data)

    assert response.status_code == 302
    events = list(AuditEvent.objects.filter(via="admin"))
    assert [(e.action, e.user_id) for e in events] == [(action, editor.pk)]
    if name in ("retry", "delete_documents", "delete_view"):
        assert events[0].document_ids == [stored.pk]


def test_deleting_a_collection_in_the_admin_goes_through_the_service(
    admin_client_logged_in, stored
):
    admin_client_logged_in.post(
        reverse("admin:ingestion_collection_delete", args=[stored.collection_id]), {"post": "yes"}
    )
    assert not Document.objects.exists()
    event = AuditEvent.objects.get(via="admin")
    assert event.action == "delete"
    assert event.document_ids == [stored.pk]


def test_staff_do_not_see_or_upload_into_collections_they_cannot_read(
    client, tmp_path, ingest_file
):
    hidden = make_collection("Board minutes")
    path = tmp_path / "m.md"
    path.write_text("# Minutes\n\nThe board met in secret.")
    secret = ingest_file(hidden, path)
    editor = staff_with(
        "view_document", "add_document", "change_document", "delete_document", "view_collection"
    )
    signed_in(client, editor)

    listing = client.get(reverse("admin:ingestion_document_changelist")).content.decode()
    assert secret.title not in listing
    assert "Board minutes" not in listing
    detail = client.get(reverse("admin:ingestion_document_change", args=[secret.pk]))
    assert detail.status_code == 302  # "does not exist", back to the admin index
    collections = client.get(reverse("admin:ingestion_collection_changelist")).content.decode()
    assert "Board minutes" not in collections

    # The same bytes again: the form refuses the collection, saying nothing about its contents.
    again = client.post(
        reverse("admin:ingestion_document_upload"),
        {
            "collection": hidden.pk,
            "files": [SimpleUploadedFile("copy.md", path.read_bytes())],
        },
    )
    text = again.content.decode()
    assert again.status_code == 200
    assert "Select a valid choice" in text
    assert "already in" not in text
    assert "Board minutes" not in text
    assert Document.objects.count() == 1
