"""Registering uploads and running the pipeline: dedup, bad files, idempotent re-ingest."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from ingestion import pipeline, services
from ingestion.models import Chunk, Document
from tests.conftest import make_collection
from tests.documents import write_markdown, write_pdf

pytestmark = pytest.mark.django_db

SECTIONS = [
    ("Overview", "Teal is the colour of the Orion team. " * 20),
    ("Budget", "The budget is 3 euros."),
]


def test_same_bytes_in_a_collection_are_stored_once(tmp_path, collection):
    path = write_markdown(tmp_path / "a.md", "Orion", SECTIONS)
    first = services.register_path(collection, path, enqueue=False)
    copy = tmp_path / "renamed.md"
    copy.write_bytes(path.read_bytes())
    second = services.register_path(collection, copy, enqueue=False)

    assert first.created
    assert not second.created
    assert second.document.pk == first.document.pk
    assert Document.objects.count() == 1


def test_same_bytes_in_another_collection_are_a_new_document(tmp_path, collection):
    path = write_markdown(tmp_path / "a.md", "Orion", SECTIONS)
    services.register_path(collection, path, enqueue=False)
    other = services.register_path(make_collection("Other"), path, enqueue=False)

    assert other.created
    assert Document.objects.count() == 2


def test_upload_over_the_size_limit_is_rejected_before_storing(settings, collection):
    settings.RAG_MAX_UPLOAD_MB = 1
    stream = io.BytesIO(b"a" * (1024 * 1024 + 1))
    files_before = set(settings.MEDIA_ROOT.rglob("*"))

    with pytest.raises(services.UploadRejected) as rejected:
        services.register_upload(collection, stream, "big.txt", enqueue=False)
    assert rejected.value.code == "too_large"
    assert not Document.objects.exists()
    assert set(settings.MEDIA_ROOT.rglob("*")) == files_before  # not even a temporary file left


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("empty.txt", b"", "empty"),
        ("image.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "unsupported_type"),
        ("program.exe", b"MZ\x90\x00" + b"\x00" * 200, "unsupported_type"),
    ],
)
def test_empty_and_unsupported_files_are_rejected_with_a_reason(collection, name, content, code):
    with pytest.raises(services.UploadRejected) as rejected:
        services.register_upload(collection, io.BytesIO(content), name, enqueue=False)
    assert rejected.value.code == code
    assert name in str(rejected.value)


def test_a_bad_file_fails_alone_with_its_reason(tmp_path, collection):
    good = write_markdown(tmp_path / "good.md", "Orion", SECTIONS)
    corrupt = tmp_path / "corrupt.pdf"
    corrupt.write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 100)
    scanned = write_pdf(tmp_path / "scanned.pdf", [("", "")])  # a page with no text layer

    ids = [
        services.register_path(collection, p, enqueue=False).document.pk
        for p in (corrupt, good, scanned)
    ]
    results = {r.document_id: r for r in map(pipeline.ingest, ids)}

    assert results[ids[1]].status == "ready"
    assert results[ids[0]].status == "failed"
    assert "damaged" in results[ids[0]].error
    assert results[ids[2]].status == "failed"
    assert "No extractable text" in results[ids[2]].error
    assert Document.objects.get(pk=ids[0]).error == results[ids[0]].error
    assert not Chunk.objects.filter(document_id__in=[ids[0], ids[2]]).exists()


def test_reingest_replaces_chunks_without_duplicates(tmp_path, collection, ingest_file):
    document = ingest_file(collection, write_markdown(tmp_path / "a.md", "Orion", SECTIONS))
    before = list(document.chunks.values_list("ordinal", "text"))

    services.reingest([document])
    pipeline.ingest(document.pk)
    pipeline.ingest(document.pk)  # a redelivered message for a ready document does nothing

    document.refresh_from_db()
    after = list(document.chunks.values_list("ordinal", "text"))
    assert document.status == "ready"
    assert after == before
    assert document.chunk_count == len(before) == Chunk.objects.filter(document=document).count()


def test_a_document_deleted_while_processing_is_left_alone(tmp_path, collection):
    result = services.register_path(
        collection, write_markdown(tmp_path / "a.md", "Orion", SECTIONS), enqueue=False
    )
    Document.objects.filter(pk=result.document.pk).delete()

    assert pipeline.ingest(result.document.pk).status == "deleted"
    assert not Chunk.objects.exists()


def test_delete_document_removes_file_chunks_and_embeddings(
    tmp_path, collection, ingest_file, django_capture_on_commit_callbacks
):
    document = ingest_file(collection, write_markdown(tmp_path / "a.md", "Orion", SECTIONS))
    stored = document.file.path

    with django_capture_on_commit_callbacks(execute=True):
        services.delete_document(document)

    assert not Document.objects.filter(pk=document.pk).exists()
    assert not Chunk.objects.filter(document_id=document.pk).exists()
    import os

    assert not os.path.exists(stored)


def test_ingest_command_reports_ready_and_failed_files(tmp_path, capsys):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    write_markdown(folder / "sub" / "good.md", "Orion", SECTIONS)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 nothing here")
    (folder / "empty.txt").write_bytes(b"")

    out = io.StringIO()
    call_command("ingest", str(folder), "--collection", "Cmd", "--sync", stdout=out)

    text = out.getvalue()
    assert "ready: 1  failed: 2" in text
    broken = Document.objects.get(original_name="broken.pdf")
    assert f"failed document {broken.pk}: The PDF is damaged or not a PDF" in text
    assert "empty.txt is empty" in text
    assert Document.objects.get(original_name="good.md").status == "ready"


def test_reingest_stuck_requeues_documents_of_dead_processes(
    tmp_path, collection, task_queue, django_capture_on_commit_callbacks
):
    result = services.register_path(
        collection, write_markdown(tmp_path / "a.md", "Orion", SECTIONS), enqueue=False
    )
    Document.objects.filter(pk=result.document.pk).update(
        status="processing",
        claimed_by=f"{pipeline.process_identity().split(':')[0]}:999999999",
        processing_started_at=timezone.now() - timedelta(minutes=1),
    )

    with django_capture_on_commit_callbacks(execute=True):  # the real enqueue, on commit
        call_command("reingest", "--stuck", stdout=io.StringIO())

    assert task_queue.document_ids() == [result.document.pk]
    assert Document.objects.get(pk=result.document.pk).status == "queued"
