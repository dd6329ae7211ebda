"""Deleting a document leaves nothing of its text anywhere: not in chunks or embeddings, not in
cached answers or citations, not in any column of any table, and not on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from ingestion.models import Chunk
from ingestion.services import delete_document
from retrieval.models import Citation, Conversation, Message
from tests.database_scan import columns, columns_containing, tsvector_columns
from tests.documents import write_markdown

pytestmark = pytest.mark.django_db

PHRASE = "Quillfeather protocol mandates vermilion lanterns"
# The words as PostgreSQL's English stemmer stores them in a tsvector.
STEMS = ["quillfeath", "vermilion"]


def test_a_deleted_document_leaves_no_trace_in_any_table_or_on_disk(
    tmp_path, collection, ingest_file, user, django_capture_on_commit_callbacks
):
    path = write_markdown(
        tmp_path / "lantern-rules.md",
        "Lighting rules",
        [("Evening duties", f"{PHRASE} at every gate after sunset.")],
    )
    document = ingest_file(collection, path, user)
    stored = Path(document.file.path)
    assert stored.exists() and PHRASE.encode() in stored.read_bytes()
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

    with django_capture_on_commit_callbacks(execute=True):
        delete_document(document)

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
    # The conversation itself survives; the answer that quoted the document does not.
    assert Message.objects.filter(conversation=conversation).count() == 2
