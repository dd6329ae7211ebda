"""The audit log records who asked what, which documents were cited, uploads, deletions and API
key use; the admin shows it read-only and exports it as CSV; retention deletes what is too old."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from axes.models import AccessLog
from django.core.management import call_command
from django.utils import timezone

from core import apikeys, audit
from core.models import AuditEvent
from ingestion import services as ingestion_services
from retrieval.answering import answer
from retrieval.models import Citation, Conversation, Message
from retrieval.retention import purge_expired
from tests.documents import FACT, write_markdown

pytestmark = pytest.mark.django_db


@pytest.fixture
def budget_document(tmp_path, collection, ingest_file, user):
    path = write_markdown(tmp_path / "budget.md", "Zephyr plan", [("Budget", FACT)])
    return ingest_file(collection, path, user)


def csv_rows(content: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(content)))


# --- what gets recorded ------------------------------------------------------------------------


def test_asking_records_the_question_and_the_cited_documents(user, budget_document):
    result = answer(user, "What is the Zephyr project budget for 2027?")

    event = AuditEvent.objects.get(action="ask", user=user)
    assert event.question == "What is the Zephyr project budget for 2027?"
    assert event.username == "staff"
    assert budget_document.pk in event.document_ids
    assert set(event.document_ids) == {c.document_id for c in result.citations}


def test_question_text_is_not_kept_when_auditing_questions_is_off(settings, user, budget_document):
    settings.RAG_AUDIT_QUESTIONS = False

    answer(user, "What is the Zephyr project budget for 2027?")
    event = audit.record(
        "search", user=user, question="secret plans", detail={"query": "x", "n": 1}
    )

    asked = AuditEvent.objects.get(action="ask", user=user)
    assert asked.question == ""
    assert asked.document_ids == [budget_document.pk]
    assert event.question == ""
    assert event.detail == {"n": 1}


def test_the_client_address_is_the_socket_peer_unless_behind_a_trusted_proxy(settings, rf, user):
    request = rf.get("/", HTTP_X_FORWARDED_FOR="6.6.6.6, 10.0.0.9", REMOTE_ADDR="10.0.0.1")
    settings.AXES_IPWARE_PROXY_COUNT = None
    assert audit.record("download", user=user, request=request).ip == "10.0.0.1"
    settings.AXES_IPWARE_PROXY_COUNT = 1
    assert audit.record("download", user=user, request=request).ip == "10.0.0.9"


def test_deleting_a_document_and_using_an_api_key_are_recorded(
    client, user, admin_user, budget_document
):
    _key, plaintext = apikeys.create_key(user, "reporting tool")
    response = client.get("/api/v1/documents/", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert response.status_code == 200
    client.force_login(admin_user)
    response = client.delete(f"/api/v1/documents/{budget_document.pk}/")
    assert response.status_code in {200, 204}

    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"api_key_created", "api_key_used", "delete"} <= actions
    deleted = AuditEvent.objects.get(action="delete")
    assert deleted.username == "admin"
    assert deleted.document_ids == [budget_document.pk]


# --- CSV export --------------------------------------------------------------------------------


def test_csv_export_says_who_asked_what_when_and_which_documents(user, budget_document):
    AuditEvent.objects.all().delete()  # the fixture's own upload row: this test counts its own
    answer(user, "What is the Zephyr project budget for 2027?")
    audit.record("upload", user=user, via="web", document_ids=[budget_document.pk])
    audit.record("delete", user=user, via="web", document_ids=[987654])
    out = io.StringIO()

    count = audit.write_csv(AuditEvent.objects.order_by("at", "id"), out)

    rows = csv_rows(out.getvalue())
    assert count == len(rows) == 3
    assert list(rows[0]) == audit.CSV_COLUMNS
    asked = next(r for r in rows if r["action"] == "ask")
    assert asked["user"] == "staff"
    assert asked["question"].startswith("What is the Zephyr")
    assert asked["documents"] == "Zephyr plan"
    # The row's own time (a year taken from the clock now would fail across New Year).
    asked_at = AuditEvent.objects.get(action="ask").at
    assert asked["time"] == asked_at.isoformat()
    assert asked["time"].startswith(f"{asked_at.year}-")
    assert next(r for r in rows if r["action"] == "delete")["documents"] == "(deleted #987654)"


@pytest.mark.parametrize("question", ['=HYPERLINK("http://evil")', "+1+2", "-2", "@SUM(A1)"])
def test_csv_export_neutralises_spreadsheet_formulas(user, question):
    audit.record("ask", user=user, question=question)
    out = io.StringIO()

    audit.write_csv(AuditEvent.objects.all(), out)

    assert csv_rows(out.getvalue())[0]["question"] == "'" + question


# --- the admin ------------------------------------------------------------------------------------


def test_admin_lists_the_audit_log_and_exports_the_filtered_view(client, admin_user, user):
    audit.record("ask", user=user, question="How many holidays?")
    audit.record("upload", user=user, document_ids=[1])
    client.force_login(admin_user)

    page = client.get("/admin/core/auditevent/", {"q": "holidays"})
    export = client.get("/admin/core/auditevent/export/", {"action__exact": "ask"})

    assert page.status_code == 200
    assert b"How many holidays?" in page.content
    assert export.status_code == 200
    assert export["Content-Type"].startswith("text/csv")
    assert "attachment" in export["Content-Disposition"]
    rows = csv_rows(export.content.decode())
    assert [r["action"] for r in rows] == ["ask"]
    # The export itself is on record.
    assert AuditEvent.objects.filter(action="audit_export", user=admin_user).exists()


def test_admin_export_action_on_selected_rows(client, admin_user, user):
    chosen = audit.record("ask", user=user, question="chosen one")
    audit.record("ask", user=user, question="not chosen")
    client.force_login(admin_user)

    response = client.post(
        "/admin/core/auditevent/",
        {"action": "export_csv", "_selected_action": [chosen.pk]},
    )

    assert response.status_code == 200
    assert [r["question"] for r in csv_rows(response.content.decode())] == ["chosen one"]


def test_audit_rows_cannot_be_changed_or_deleted_in_the_admin(client, admin_user, user):
    event = audit.record("ask", user=user, question="keep me")
    client.force_login(admin_user)

    delete = client.post(f"/admin/core/auditevent/{event.pk}/delete/", {"post": "yes"})
    change = client.post(f"/admin/core/auditevent/{event.pk}/change/", {"question": "edited"})
    add = client.get("/admin/core/auditevent/add/")

    assert delete.status_code == 403
    assert add.status_code == 403
    assert change.status_code in {403, 200}
    event.refresh_from_db()
    assert event.question == "keep me"


def test_the_audit_log_is_for_staff_with_permission_only(client, user):
    audit.record("ask", user=user, question="private")
    client.force_login(user)

    response = client.get("/admin/core/auditevent/export/")

    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_support_views_of_conversations_messages_citations_and_keys(client, admin_user, user):
    conversation = Conversation.objects.create(user=user, title="Holiday question")
    message = Message.objects.create(
        conversation=conversation, role="assistant", content="Ten days [1]."
    )
    Citation.objects.create(message=message, number=1, document_title="Handbook", snippet="ten")
    key, _ = apikeys.create_key(user, "tool")
    client.force_login(admin_user)

    for url in [
        "/admin/retrieval/conversation/",
        f"/admin/retrieval/conversation/{conversation.pk}/change/",
        "/admin/retrieval/message/",
        "/admin/retrieval/citation/",
        "/admin/core/apikey/",
    ]:
        response = client.get(url)
        assert response.status_code == 200, url
    assert key.key_hash.encode() not in client.get(f"/admin/core/apikey/{key.pk}/change/").content

    revoke = client.post("/admin/core/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    assert revoke.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None


# --- retention -----------------------------------------------------------------------------------


def _age(queryset, field: str, days: int) -> None:
    queryset.update(**{field: timezone.now() - timedelta(days=days)})


@pytest.fixture
def old_and_new(user):
    old = Conversation.objects.create(user=user, title="Old thread")
    old_message = Message.objects.create(conversation=old, role="user", content="old question")
    Citation.objects.create(message=old_message, number=1, snippet="old snippet")
    new = Conversation.objects.create(user=user, title="New thread")
    Message.objects.create(conversation=new, role="user", content="new question")
    old_event = audit.record("ask", user=user, question="old question")
    new_event = audit.record("ask", user=user, question="new question")
    login = AccessLog.objects.create(username="staff", ip_address="10.0.0.1", user_agent="x")
    _age(Conversation.objects.filter(pk=old.pk), "updated_at", 40)
    _age(AuditEvent.objects.filter(pk=old_event.pk), "at", 40)
    _age(AccessLog.objects.filter(pk=login.pk), "attempt_time", 40)
    return {"old": old, "new": new, "old_event": old_event, "new_event": new_event}


def test_purge_deletes_conversations_audit_rows_and_sign_ins_older_than_the_period(old_and_new):
    result = purge_expired(days=30)

    assert (result.conversations, result.messages, result.audit_events) == (1, 1, 1)
    assert result.login_records == 1
    assert not Conversation.objects.filter(pk=old_and_new["old"].pk).exists()
    assert not Message.objects.filter(content="old question").exists()
    assert not Citation.objects.filter(snippet="old snippet").exists()
    assert not AuditEvent.objects.filter(pk=old_and_new["old_event"].pk).exists()
    assert Conversation.objects.filter(pk=old_and_new["new"].pk).exists()
    assert AuditEvent.objects.filter(pk=old_and_new["new_event"].pk).exists()
    assert not AccessLog.objects.exists()


def test_a_conversation_in_use_is_kept_whole(user, old_and_new):
    Conversation.objects.filter(pk=old_and_new["old"].pk).update(updated_at=timezone.now())

    purge_expired(days=30)

    assert Message.objects.filter(content="old question").exists()


def test_retention_zero_keeps_everything(settings, old_and_new):
    settings.RAG_RETENTION_DAYS = 0

    result = purge_expired()

    assert result.cutoff is None
    assert result.total == 0
    assert Conversation.objects.count() == 2
    assert AuditEvent.objects.count() == 2


def test_the_setting_drives_the_scheduled_task(settings, old_and_new):
    from ragsite.celery import app
    from retrieval.tasks import purge_expired as task

    settings.RAG_RETENTION_DAYS = 30
    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in app.conf.beat_schedule.values()}

    assert "retrieval.tasks.purge_expired" in scheduled
    assert task.name in app.tasks
    assert task.name == "retrieval.tasks.purge_expired"
    assert task.apply().get() == {
        "conversations": 1,
        "messages": 1,
        "audit_events": 1,
        "login_records": 1,
        "disclosures": 0,
    }


def test_manage_py_purge_expired(settings, old_and_new):
    settings.RAG_RETENTION_DAYS = 30
    dry, real = io.StringIO(), io.StringIO()

    call_command("purge_expired", "--dry-run", stdout=dry)
    assert Conversation.objects.count() == 2
    call_command("purge_expired", stdout=real)

    assert dry.getvalue().startswith("Would delete 1 conversations (1 messages), 1 audit events")
    assert real.getvalue().startswith("Deleted 1 conversations (1 messages), 1 audit events")
    assert Conversation.objects.count() == 1


def test_manage_py_purge_expired_says_when_retention_is_off(settings, old_and_new):
    settings.RAG_RETENTION_DAYS = 0
    out = io.StringIO()

    call_command("purge_expired", stdout=out)

    assert "Retention is off" in out.getvalue()
    assert Conversation.objects.count() == 2


def test_uploads_are_recorded_by_the_entry_points(client, admin_user, collection, tmp_path):
    """The console's upload goes through register_upload and leaves an audit row."""
    client.force_login(admin_user)
    path = write_markdown(tmp_path / "memo.md", "Memo", [("Body", "Holiday memo text.")])
    with path.open("rb") as handle:
        response = client.post(f"/console/collections/{collection.pk}/upload/", {"files": [handle]})
    assert response.status_code in {200, 302}
    event = AuditEvent.objects.get(action="upload")
    document = ingestion_services.Document.objects.get(original_name="memo.md")
    assert event.username == "admin"
    assert event.document_ids == [document.pk]
