"""The Django admin: multi-file upload through the service, filters, bulk retry and delete."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from ingestion.models import Document

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
