"""Progress of a document being processed: its stage and the chunks embedded so far, written as
the pipeline goes (seen from another database connection), shown in the API and the console."""

from __future__ import annotations

import psycopg
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from core import apikeys
from ingestion import pipeline, services
from ingestion.models import Document
from tests.conftest import database_url, make_collection
from tests.documents import write_markdown

# Transactional: the pipeline's progress writes must be visible to another connection at once,
# which the test's own wrapping transaction would hide.
pytestmark = pytest.mark.django_db(transaction=True)

SLICE = 8
TOPICS = ["harbour", "lantern", "orchard", "quarry", "meadow", "glacier", "canyon", "prairie"]


def _sections(count: int) -> list[tuple[str, str]]:
    # Headings start new chunks: one chunk per section, each with its own words.
    return [
        (
            f"Section {n}",
            f"The {TOPICS[n % len(TOPICS)]} report number {n} says the team met on day {n} "
            f"and agreed on plan {n * 7}.",
        )
        for n in range(count)
    ]


@pytest.fixture
def outside() -> psycopg.Connection:
    """A second connection: sees only what the pipeline has committed."""
    with psycopg.connect(database_url(), autocommit=True) as conn:
        yield conn


def _row(conn: psycopg.Connection, document_id: int) -> tuple:
    return conn.execute(
        "SELECT status, progress_stage, progress_done, progress_total"
        " FROM ingestion_document WHERE id = %s",
        [document_id],
    ).fetchone()


def test_a_large_document_reports_each_stage_and_the_chunks_embedded_as_it_goes(
    tmp_path, settings, outside
):
    settings.RAG_EMBEDDING_SLICE = SLICE
    staff = User.objects.create_user("editor", password="a-long-test-password", is_superuser=True)
    collection = make_collection("Handbook")
    path = write_markdown(tmp_path / "big.md", "Field reports", _sections(44))
    document_id = services.register_path(collection, path, enqueue=False).document.pk
    console = Client()
    console.force_login(staff)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {apikeys.create_key(staff, 'tests')[1]}")
    seen: list[tuple] = []
    shown: dict[str, object] = {}

    def watch(reported_id: int, progress: pipeline.Progress) -> None:
        row = _row(outside, reported_id)
        seen.append(row)
        # The row another connection reads is what the pipeline just reported.
        assert row == ("processing", progress.stage, progress.done, progress.total)
        if progress.stage == "embedding" and SLICE <= progress.done < progress.total and not shown:
            shown["api"] = api.get(f"/api/v1/documents/{document_id}/").json()
            shown["status"] = console.get(
                reverse("console:status"), {"collection": collection.pk}
            ).json()
            shown["page"] = console.get("/console/", {"collection": collection.pk}).content

    result = pipeline.ingest(document_id, on_progress=watch)

    assert result.status == "ready"
    total = result.chunks
    assert total > 4 * SLICE  # several slices
    stages = [stage for _, stage, _, _ in seen]
    assert stages[:2] == ["parsing", "chunking"]
    assert stages[-1] == "storing"
    embedding = [(done, of) for _, stage, done, of in seen if stage == "embedding"]
    assert [done for done, _ in embedding] == [*range(0, total, SLICE), total]
    assert {of for _, of in embedding} == {total}
    assert seen[-1][2:] == (total, total)

    # The API and the console showed the same run half-way through.
    api_progress = shown["api"]["progress"]
    assert api_progress["stage"] == "embedding"
    assert api_progress["total"] == total
    assert 0 < api_progress["done"] < total
    entry = shown["status"]["documents"][str(document_id)]
    assert entry["progress"]["done"] == api_progress["done"]
    assert entry["progress"]["percent"] == 100 * api_progress["done"] // total
    done = api_progress["done"]
    assert f"{done} of {total} chunks embedded" in shown["status"]["documents_html"]
    assert f'<progress max="{total}" value="{done}"' in shown["page"].decode()

    # Finished: the progress is gone everywhere.
    assert _row(outside, document_id) == ("ready", "", 0, 0)
    assert api.get(f"/api/v1/documents/{document_id}/").json()["progress"] is None
    status = console.get(reverse("console:status"), {"collection": collection.pk}).json()
    assert status["documents"][str(document_id)]["progress"] is None
    assert "chunks embedded" not in status["documents_html"]


def test_a_failed_document_keeps_no_progress(tmp_path, outside):
    collection = make_collection("Handbook")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 100)
    document_id = services.register_path(collection, broken, enqueue=False).document.pk
    stages: list[str] = []

    result = pipeline.ingest(document_id, on_progress=lambda _id, p: stages.append(p.stage))

    assert result.status == "failed"
    assert stages == ["parsing"]
    assert _row(outside, document_id) == ("failed", "", 0, 0)
    assert pipeline.progress_of(Document.objects.get(pk=document_id)) is None
