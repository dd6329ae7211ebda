"""Every write action audits itself, whatever the entry point: the console, the Django admin, the
REST API and manage.py each leave exactly one audit row per action, naming the acting user and
the entry point (`via`). Entry points never write audit rows themselves, so a new one cannot
forget to.
"""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse

from core import apikeys
from core.models import ApiKey, AuditEvent
from ingestion import services
from ingestion.models import Collection, Document

pytestmark = pytest.mark.django_db


@pytest.fixture
def document(collection, tmp_path) -> Document:
    path = tmp_path / "memo.txt"
    path.write_text("A memo about the holiday schedule.")
    document = services.register_path(collection, path, enqueue=False).document
    AuditEvent.objects.all().delete()  # only what the entry point under test records counts
    return document


def new_file(name: str = "new.txt") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, f"Fresh text about pears, in {name}.".encode())


def audit_rows() -> list[tuple[str, str, str]]:
    return list(AuditEvent.objects.order_by("id").values_list("action", "via", "username"))


# Each entry point's way of doing each action: (action, via, request maker).
def console(client, document):
    collection_id = document.collection_id
    return {
        "collection_created": lambda: client.post(
            reverse("console:create_collection"),
            {"name": "Policies", "visibility": Collection.Visibility.EVERYONE},
        ),
        "upload": lambda: client.post(
            reverse("console:upload", args=[collection_id]), {"files": [new_file()]}
        ),
        "reingest": lambda: client.post(reverse("console:retry", args=[document.pk])),
        "reindex": lambda: client.post(reverse("console:reindex", args=[collection_id])),
        "delete": lambda: client.post(reverse("console:delete", args=[document.pk])),
        "api_key_created": lambda: client.post(reverse("web:keys"), {"name": "tool"}),
    }


def admin(client, document):
    changelist = reverse("admin:ingestion_document_changelist")
    return {
        "upload": lambda: client.post(
            reverse("admin:ingestion_document_upload"),
            {"collection": document.collection_id, "files": [new_file()]},
        ),
        "reingest": lambda: client.post(
            changelist, {"action": "retry", "_selected_action": [document.pk]}
        ),
        "reindex": lambda: client.post(
            reverse("admin:ingestion_collection_changelist"),
            {"action": "reindex", "_selected_action": [document.collection_id]},
        ),
        "delete": lambda: client.post(
            changelist, {"action": "delete_documents", "_selected_action": [document.pk]}
        ),
        "delete_view": lambda: client.post(
            reverse("admin:ingestion_document_delete", args=[document.pk]), {"post": "yes"}
        ),
        "delete_collection": lambda: client.post(
            reverse("admin:ingestion_collection_delete", args=[document.collection_id]),
            {"post": "yes"},
        ),
    }


def api(client, document):
    return {
        "collection_created": lambda: client.post(
            "/api/v1/collections/", {"name": "Policies"}, content_type="application/json"
        ),
        "upload": lambda: client.post(
            "/api/v1/documents/", {"collection": document.collection_id, "files": [new_file()]}
        ),
        "reingest": lambda: client.post(f"/api/v1/documents/{document.pk}/retry/"),
        "delete": lambda: client.delete(f"/api/v1/documents/{document.pk}/"),
        "api_key_created": lambda: client.post(
            "/api/v1/keys/", {"name": "tool"}, content_type="application/json"
        ),
    }


EXPECTED = {
    "collection_created": "collection_created",
    "upload": "upload",
    "reingest": "reingest",
    "reindex": "reingest",
    "delete": "delete",
    "delete_view": "delete",
    "delete_collection": "delete",
    "api_key_created": "api_key_created",
}


def cases():
    for via, maker in (("web", console), ("admin", admin), ("api", api)):
        names = maker(None, Document(pk=1, collection_id=1))
        for name in names:
            yield pytest.param(via, maker, name, id=f"{via}-{name}")


@pytest.mark.parametrize(("via", "maker", "name"), list(cases()))
def test_each_entry_point_writes_one_audit_row_per_action(
    client, admin_user, document, via, maker, name
):
    client.force_login(admin_user)

    response = maker(client, document)[name]()

    assert response.status_code < 400, response.content[:500]
    assert audit_rows() == [(EXPECTED[name], via, "admin")]


def test_revoking_a_key_is_audited_once_from_each_entry_point(client, admin_user):
    client.force_login(admin_user)
    revokers = {
        "web": lambda key: client.post(reverse("web:revoke_key", args=[key.pk])),
        "api": lambda key: client.delete(f"/api/v1/keys/{key.pk}/"),
        "admin": lambda key: client.post(
            reverse("admin:core_apikey_changelist"),
            {"action": "revoke", "_selected_action": [key.pk]},
        ),
    }
    for via, revoke in revokers.items():
        key, _ = apikeys.create_key(admin_user, f"key for {via}")
        AuditEvent.objects.all().delete()

        response = revoke(key)

        assert response.status_code < 400, (via, response.content[:300])
        assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
        assert audit_rows() == [("api_key_revoked", via, "admin")], via


def test_manage_py_ingest_and_reingest_are_audited_as_cli(tmp_path, document):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.txt").write_text("Alpha text about apples.")
    (tmp_path / "folder" / "b.txt").write_text("Bravo text about bananas.")

    call_command(
        "ingest", str(tmp_path / "folder"), "--collection", "Imports", stdout=io.StringIO()
    )
    call_command("reingest", str(document.pk), stdout=io.StringIO())

    assert audit_rows() == [
        ("collection_created", "cli", ""),
        ("upload", "cli", ""),
        ("upload", "cli", ""),
        ("reingest", "cli", ""),
    ]


def test_an_action_and_its_audit_row_share_one_transaction(document, monkeypatch):
    """If the audit row cannot be written, the action does not happen either."""

    def broken(*args, **kwargs):
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr("core.audit.AuditEvent.objects.create", broken)

    with pytest.raises(RuntimeError):
        services.delete_document(document)

    assert Document.objects.filter(pk=document.pk).exists()


def test_entry_points_do_not_write_audit_rows_themselves():
    """Only actions record: no view, admin, API or command module calls audit.record."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    entry_points = [
        *root.glob("*/views*.py"),
        *root.glob("*/views/*.py"),
        *root.glob("*/admin.py"),
        *root.glob("*/api.py"),
        *root.glob("*/api/*.py"),
        *root.glob("*/management/commands/*.py"),
    ]
    assert entry_points
    offenders = [
        str(path.relative_to(root)) for path in entry_points if "audit.record(" in path.read_text()
    ]
    assert offenders == []
