"""Term statistics (ingestion_termstatistic) are the document frequencies full-text search weighs
words by. PostgreSQL triggers keep them; here every write path is checked against a recount from
the chunks of ready documents: ingest, re-ingest, a failed re-ingest, document and collection
deletes (through the ORM and by raw SQL in either order), and a truncate."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import connection, transaction

from ingestion import pipeline, services
from ingestion.models import Collection, Document, TermStatistic
from tests.conftest import make_collection
from tests.documents import write_markdown

RECOUNT = """
    SELECT d.collection_id, l.lexeme, count(*)
    FROM ingestion_chunk c
    JOIN ingestion_document d ON d.id = c.document_id AND d.status = 'ready'
    CROSS JOIN LATERAL unnest(array_append(tsvector_to_array(c.search_vector), '')) l(lexeme)
    GROUP BY 1, 2
"""


def recount() -> dict[tuple[int, str], int]:
    with connection.cursor() as cursor:
        cursor.execute(RECOUNT)
        return {(c, lexeme): n for c, lexeme, n in cursor.fetchall()}


def kept() -> dict[tuple[int, str], int]:
    return {
        (s.collection_id, s.lexeme): s.passages
        for s in TermStatistic.objects.all()  # every row, zeros included: none may be left
    }


def assert_statistics_right() -> None:
    assert kept() == recount()


@pytest.fixture
def pages(tmp_path) -> dict[str, Path]:
    return {
        "lamps": write_markdown(
            tmp_path / "lamps.md",
            "Gate lamps",
            [
                ("Lighting", "The quillfeather lamps at the north gate are lit after sunset."),
                ("Repairs", "Broken lamps are reported to the facilities desk."),
            ],
        ),
        "travel": write_markdown(
            tmp_path / "travel.md",
            "Travel policy",
            [("Budget", "Travel is booked through the facilities desk within the budget.")],
        ),
        "holidays": write_markdown(
            tmp_path / "holidays.md",
            "Holidays",
            [("Leave", "Every team plans its holidays; the lamps stay lit on holidays.")],
        ),
    }


@pytest.fixture
def library(db, ingest_file, pages) -> dict[str, Document]:
    handbook = make_collection("Handbook", everyone=True)
    other = make_collection("Other")
    documents = {
        "lamps": ingest_file(handbook, pages["lamps"]),
        "travel": ingest_file(handbook, pages["travel"]),
        "holidays": ingest_file(other, pages["holidays"]),
    }
    assert {d.status for d in documents.values()} == {Document.Status.READY}
    return documents


def test_ingest_counts_every_passage_and_word_per_collection(library):
    statistics = kept()
    assert statistics == recount()
    handbook = library["lamps"].collection_id
    # Passages of the collection under the empty lexeme; a word in both documents counted twice.
    passages = sum(d.chunk_count for d in library.values() if d.collection_id == handbook)
    assert statistics[(handbook, "")] == passages
    assert statistics[(handbook, "facil")] == 2
    assert statistics[(handbook, "quillfeath")] == 1
    assert (library["holidays"].collection_id, "quillfeath") not in statistics


def test_reingest_counts_out_while_queued_and_in_again_once_ready(library):
    lamps = library["lamps"]
    before = kept()

    services.reingest([lamps])

    # Queued documents are not searchable: their passages no longer count.
    assert (lamps.collection_id, "quillfeath") not in kept()
    assert_statistics_right()

    pipeline.ingest(lamps.pk)

    assert Document.objects.get(pk=lamps.pk).status == Document.Status.READY
    assert kept() == before
    assert_statistics_right()


def test_a_failed_reingest_counts_the_document_out(library, tmp_path):
    lamps = library["lamps"]
    services.reingest([lamps])
    Path(Document.objects.get(pk=lamps.pk).file.path).unlink()

    result = pipeline.ingest(lamps.pk)

    assert result.status == Document.Status.FAILED
    assert (lamps.collection_id, "quillfeath") not in kept()
    assert_statistics_right()


def test_deleting_a_document_leaves_none_of_its_words(library):
    lamps = library["lamps"]

    services.delete_document(lamps)

    statistics = kept()
    assert not [key for key in statistics if key[1] == "quillfeath"]
    assert statistics[(lamps.collection_id, "facil")] == 1
    assert_statistics_right()


def test_deleting_a_collection_removes_its_statistics(library):
    other = Collection.objects.get(pk=library["holidays"].collection_id)

    other.delete()

    assert not TermStatistic.objects.filter(collection_id=other.pk).exists()
    assert TermStatistic.objects.filter(collection_id=library["lamps"].collection_id).exists()
    assert_statistics_right()


@pytest.mark.parametrize("documents_first", [False, True])
def test_raw_sql_deletes_in_either_order_keep_the_statistics_right(library, documents_first):
    handbook = library["lamps"].collection_id
    ids = [library["lamps"].pk, library["travel"].pk]
    statements = [
        "DELETE FROM ingestion_chunk WHERE document_id = ANY(%s)",
        "DELETE FROM ingestion_document WHERE id = ANY(%s)",
    ]
    if documents_first:  # foreign keys are deferred: legal inside one transaction
        statements.reverse()
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement, [ids])

    assert not TermStatistic.objects.filter(collection_id=handbook).exists()
    assert_statistics_right()


def test_moving_a_document_moves_its_counts(library):
    holidays = library["holidays"]
    handbook = library["lamps"].collection_id

    Document.objects.filter(pk=holidays.pk).update(collection_id=handbook)

    assert not TermStatistic.objects.filter(collection_id=holidays.collection_id).exists()
    assert_statistics_right()


def test_edited_chunks_are_recounted(library):
    lamps = library["lamps"]
    chunk = lamps.chunks.order_by("ordinal").first()

    type(chunk).objects.filter(pk=chunk.pk).update(text="Zeppelins moor at the south gate.")

    assert kept()[(lamps.collection_id, "zeppelin")] == 1
    assert_statistics_right()


def test_truncating_chunks_empties_the_statistics(library):
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the test's pending checks, done now
        cursor.execute("TRUNCATE ingestion_chunk CASCADE")

    assert kept() == {}
