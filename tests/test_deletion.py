"""Deleting a document leaves nothing of its text anywhere: not in chunks or embeddings, not in
cached answers or citations, not in any column of any table, and not on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from ingestion.models import Chunk
from ingestion.services import delete_document
from retrieval.models import Citation, Conversation, Message
from tests.documents import write_markdown

pytestmark = pytest.mark.django_db

PHRASE = "Quillfeather protocol mandates vermilion lanterns"
# The words as PostgreSQL's English stemmer stores them in a tsvector.
STEMS = ["quillfeath", "vermilion"]
TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb")


def columns(data_types: tuple[str, ...]) -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.table_name, c.column_name FROM information_schema.columns c
            JOIN information_schema.tables t
              ON t.table_schema = c.table_schema AND t.table_name = c.table_name
            WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
              AND c.data_type = ANY(%s)
            ORDER BY 1, 2
            """,
            [list(data_types)],
        )
        return cursor.fetchall()


def tsvector_columns() -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT table_name, column_name FROM information_schema.columns
            WHERE table_schema = current_schema() AND udt_name = 'tsvector'
            """
        )
        return cursor.fetchall()


def where_found(needles: list[str], cols: list[tuple[str, str]]) -> list[str]:
    """table.column for every column holding any of `needles` (case-insensitive)."""
    found = []
    with connection.cursor() as cursor:
        for table, column in cols:
            for needle in needles:
                cursor.execute(
                    f'SELECT count(*) FROM "{table}" WHERE "{column}"::text ILIKE %s',  # noqa: S608
                    [f"%{needle}%"],
                )
                if cursor.fetchone()[0]:
                    found.append(f"{table}.{column} ({needle})")
    return found


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
    text_columns = columns(TEXT_TYPES)
    # The scan sees the phrase before deletion (in the chunk, the answer and the citation), so an
    # empty result afterwards means something.
    before = where_found([PHRASE], text_columns)
    assert {"ingestion_chunk.text", "retrieval_message.content", "retrieval_citation.snippet"} <= {
        hit.split(" ")[0] for hit in before
    }
    assert where_found(STEMS, tsvector_columns())

    with django_capture_on_commit_callbacks(execute=True):
        delete_document(document)

    assert where_found([PHRASE, "Quillfeather"], text_columns) == []
    assert where_found(STEMS, tsvector_columns()) == []
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
