"""Every failure ends a document `failed` with a reason; only a lost connection is retried.

The errors are real: a missing embedding model, and PostgreSQL raising from a trigger on the
chunk table with the SQLSTATE of each kind of error (a unique violation, an undefined table, a
plain exception, a lost connection). The task runs through Celery's own `apply`, retries and
failure callback included.
"""

from __future__ import annotations

import pytest
from django.db import connection

from ingestion import embedding, pipeline, services
from ingestion.models import Chunk, Document
from ingestion.tasks import MAX_RETRIES, ingest_document
from tests.documents import write_markdown

pytestmark = pytest.mark.django_db

SECTIONS = [("Budget", "The Orion budget is 3 euros. " * 10)]


def register(collection, tmp_path) -> Document:
    path = write_markdown(tmp_path / "a.md", "Orion", SECTIONS)
    return services.register_path(collection, path, enqueue=False).document


@pytest.fixture
def chunk_insert_raises():
    """Make PostgreSQL refuse chunk rows with the given SQLSTATE (undone with the test's
    transaction)."""

    def install(sqlstate: str, message: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                CREATE FUNCTION pg_temp.refuse_chunk() RETURNS trigger AS $$
                BEGIN RAISE EXCEPTION '{message}' USING ERRCODE = '{sqlstate}'; END
                $$ LANGUAGE plpgsql;
                CREATE TRIGGER refuse_chunk BEFORE INSERT ON ingestion_chunk
                FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse_chunk();
                """
            )

    return install


def test_a_failing_embedding_model_ends_the_document_failed(tmp_path, collection, settings):
    document = register(collection, tmp_path)
    settings.RAG_EMBEDDING_MODEL = str(tmp_path / "no-such-model")
    embedding.get_model.cache_clear()
    try:
        result = pipeline.ingest(document.pk)
    finally:
        embedding.get_model.cache_clear()  # the next test loads the real model again

    document.refresh_from_db()
    assert result.status == "failed" == document.status
    assert document.error.startswith("Unexpected error (EmbeddingModelError)")
    assert "no-such-model" in document.error
    assert document.unfinished_runs == 0
    assert document.claimed_by == ""


@pytest.mark.parametrize(
    ("sqlstate", "kind"),
    [
        ("23505", "IntegrityError"),
        ("42P01", "ProgrammingError"),
        ("XX000", "InternalError"),
    ],
)
def test_a_database_error_fails_the_document_at_once_without_retries(
    tmp_path, collection, chunk_insert_raises, sqlstate, kind
):
    document = register(collection, tmp_path)
    chunk_insert_raises(sqlstate, "refused by the test trigger")

    outcome = ingest_document.apply(args=[document.pk])

    document.refresh_from_db()
    assert outcome.result == "failed"
    assert document.status == "failed"
    assert document.error.startswith(f"Unexpected error ({kind})")
    assert "refused by the test trigger" in document.error
    assert document.attempts == 1  # not retried as if the database had gone away
    assert not Chunk.objects.filter(document=document).exists()


def test_a_lost_connection_is_retried_then_the_failure_callback_ends_the_document(
    tmp_path, collection, chunk_insert_raises
):
    document = register(collection, tmp_path)
    chunk_insert_raises("08006", "connection lost in the test trigger")

    outcome = ingest_document.apply(args=[document.pk])

    document.refresh_from_db()
    assert outcome.failed()
    assert document.attempts == MAX_RETRIES + 1  # the first run and each retry
    assert document.status == "failed"
    assert document.error.startswith(f"Gave up after {MAX_RETRIES} retries")
    assert "connection lost in the test trigger" in document.error
    # Each retry gave its claim back: lost connections are not runs that stopped the worker.
    assert document.unfinished_runs == 0


def test_only_connection_errors_count_as_transient():
    from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError

    assert pipeline.is_transient(InterfaceError("connection already closed"))
    assert pipeline.is_transient(OperationalError("could not connect to server"))
    assert pipeline.is_transient(ConnectionRefusedError())
    assert not pipeline.is_transient(IntegrityError("duplicate key"))
    assert not pipeline.is_transient(DatabaseError("something else"))
    assert not pipeline.is_transient(PermissionError("stored file unreadable"))
    assert not pipeline.is_transient(ValueError("a bug"))


def test_the_failure_callback_ends_a_document_killed_at_the_hard_time_limit(
    tmp_path, collection, settings
):
    """At the hard limit the pool process is killed mid-document; the worker's main process
    then calls the task's on_failure (celery.worker.request.Request.on_timeout) with
    TimeLimitExceeded. Here the document is left as that kill leaves it."""
    from celery.exceptions import TimeLimitExceeded

    settings.CELERY_TASK_TIME_LIMIT = 1800
    document = register(collection, tmp_path)
    Document.objects.filter(pk=document.pk).update(
        status="processing", claimed_by="host:1", unfinished_runs=1
    )

    ingest_document.on_failure(TimeLimitExceeded(1800), "task-id", (document.pk,), {}, None)

    document.refresh_from_db()
    assert document.status == "failed"
    assert document.error.startswith("Processing took longer than the time limit (1800 s")
    assert document.unfinished_runs == 0


def test_the_failure_callback_leaves_a_finished_document_alone(tmp_path, collection):
    document = register(collection, tmp_path)
    pipeline.ingest(document.pk)

    ingest_document.on_failure(RuntimeError("late"), "task-id", (document.pk,), {}, None)

    document.refresh_from_db()
    assert document.status == "ready"
    assert document.error == ""
