"""Deleting a document leaves nothing of its text anywhere: not in chunks or embeddings, not in
cached answers or citations, not in any column of any table, and not on disk. Proved through
every entry point (the service, the API, the console, the admin's delete page and bulk action),
with the on-commit callbacks that remove the file really run."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from core import apikeys
from ingestion.models import Chunk, Document
from ingestion.services import delete_document
from retrieval.models import Citation, Conversation, Message
from tests.database_scan import columns, columns_containing, tsvector_columns
from tests.documents import write_markdown

pytestmark = pytest.mark.django_db

PHRASE = "Quillfeather protocol mandates vermilion lanterns"
# The words as PostgreSQL's English stemmer stores them in a tsvector.
STEMS = ["quillfeath", "vermilion"]


def _delete_through_service(document: Document, actor: User) -> None:
    delete_document(document)


def _delete_through_api(document: Document, actor: User) -> None:
    _, key = apikeys.create_key(actor, "deletion test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.delete(f"/api/v1/documents/{document.pk}/")
    assert response.status_code == 204, response.content[:300]


def _signed_in(actor: User) -> Client:
    client = Client()
    client.force_login(actor)
    return client


def _delete_through_console(document: Document, actor: User) -> None:
    response = _signed_in(actor).post(reverse("console:delete", args=[document.pk]))
    assert response.status_code == 302, response.content[:300]


def _delete_through_admin_page(document: Document, actor: User) -> None:
    response = _signed_in(actor).post(
        reverse("admin:ingestion_document_delete", args=[document.pk]), {"post": "yes"}
    )
    assert response.status_code == 302, response.content[:300]


def _delete_through_admin_action(document: Document, actor: User) -> None:
    response = _signed_in(actor).post(
        reverse("admin:ingestion_document_changelist"),
        {"action": "delete_documents", "_selected_action": [document.pk]},
    )
    assert response.status_code == 302, response.content[:300]


ENTRY_POINTS = {
    "service": _delete_through_service,
    "api": _delete_through_api,
    "console": _delete_through_console,
    "admin-delete-page": _delete_through_admin_page,
    "admin-bulk-action": _delete_through_admin_action,
}


@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_a_deleted_document_leaves_no_trace_in_any_table_or_on_disk(
    entry_point, tmp_path, collection, ingest_file, admin_user, django_capture_on_commit_callbacks
):
    user = admin_user
    path = write_markdown(
        tmp_path / "lantern-rules.md",
        "Lighting rules",
        [("Evening duties", f"{PHRASE} at every gate after sunset.")],
    )
    document = ingest_file(collection, path, user)
    stored = Path(document.file.path)
    assert stored.exists()
    assert PHRASE.encode() in stored.read_bytes()
    chunk = document.chunks.get()
    conversation = Conversation.objects.create(user=user, title="Gate lighting")
    Message.objects.create(conversation=conversation, role="user", content="What lights the gates?")
    answer = Message.objects.create(
        conversation=conversation,
        role="assistant",
        content=f"The rule says: {PHRASE} [1].",
        search_query="gate lights after sunset",
        outcome="answered",
    )
    Citation.objects.create(
        message=answer,
        number=1,
        document=document,
        chunk=chunk,
        document_title=document.title,
        heading=chunk.heading,
        snippet=chunk.text,
    )
    text_columns = columns()
    # The scan sees the phrase before deletion (in the chunk, the answer and the citation), so an
    # empty result afterwards means something.
    before = columns_containing([PHRASE], text_columns)
    assert {
        "ingestion_chunk.text",
        "retrieval_message.content",
        "retrieval_citation.snippet",
    } <= set(before)
    assert columns_containing(STEMS, tsvector_columns())

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        ENTRY_POINTS[entry_point](document, user)

    assert callbacks, "the deletion scheduled no after-commit work (the file removal)"
    assert not Document.objects.filter(pk=document.pk).exists()
    assert columns_containing([PHRASE, "Quillfeather"], text_columns) == []
    assert columns_containing(STEMS, tsvector_columns()) == []
    assert not Chunk.objects.filter(document_id=document.pk).exists()
    assert not stored.exists()
    leftovers = [
        p
        for p in Path(settings.MEDIA_ROOT).rglob("*")
        if p.is_file() and PHRASE.encode() in p.read_bytes()
    ]
    assert leftovers == []
    # The conversation survives with the question; the answer that quoted the document is gone.
    remaining = list(
        Message.objects.filter(conversation=conversation).values_list("role", "content")
    )
    assert ("user", "What lights the gates?") in remaining
    assert not any(PHRASE in content for _, content in remaining)
