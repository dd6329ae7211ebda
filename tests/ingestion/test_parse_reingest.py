"""`manage.py reingest --collection NAME` re-applies today's parsing to documents already stored.

The stored chunks are first made to look like an older parser's output (a navigation chunk and a
run-on table line); re-ingesting the collection replaces them with what parsing gives now, and
leaves other collections alone.
"""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from ingestion import pipeline
from ingestion.models import Chunk, Document
from tests.conftest import make_collection
from tests.ingestion.test_parse_formats import DOCBOOK_PAGE

pytestmark = pytest.mark.django_db


def test_reingest_collection_replaces_old_chunks_with_todays_parsing(tmp_path, ingest_file):
    manual = make_collection("Manual", everyone=True)
    other = make_collection("Other", everyone=True)
    page = tmp_path / "explicit-locking.html"
    page.write_text(DOCBOOK_PAGE)
    document = ingest_file(manual, page)
    untouched = ingest_file(other, page)
    assert document.status == Document.Status.READY, document.error
    # What the parser of the previous release stored for this page.
    Chunk.objects.filter(document=document).update(
        text="13.3. Explicit Locking Prev Up Chapter 13. Concurrency Control Home Next"
    )
    Chunk.objects.filter(document=untouched).update(text="left as it was")

    out = StringIO()
    call_command("reingest", "--collection", "Manual", stdout=out)

    assert "Queued 1 documents." in out.getvalue()
    assert Document.objects.get(pk=document.pk).status == Document.Status.QUEUED
    pipeline.ingest(document.pk)  # what the worker does with the queued message
    document.refresh_from_db()
    assert document.status == Document.Status.READY, document.error
    texts = [c.text for c in document.chunks.order_by("ordinal")]
    assert not any("Prev" in text or "Home" in text for text in texts)
    assert any(
        "Requested Lock Mode | ACCESS SHARE | EXCLUSIVE\nROW SHARE | | X" in text for text in texts
    )
    assert {c.text for c in untouched.chunks.all()} == {"left as it was"}


def test_reingest_of_an_unknown_collection_says_so():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No collection named 'Nowhere'"):
        call_command("reingest", "--collection", "Nowhere")
