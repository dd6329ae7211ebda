"""Hostile uploads fail alone, cleanly and with a reason: zip bombs, absurdly nested pages,
path-traversal names, files whose name lies about their type, oversized and empty files."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
from django.conf import settings

from ingestion import pipeline
from ingestion.models import Document
from ingestion.parsing import DOCX, HTML, PDF, TEXT
from ingestion.services import UploadRejected, clean_filename, register_upload
from tests.documents import FACT, write_pdf

pytestmark = pytest.mark.django_db


def upload(collection, data: bytes, filename: str) -> Document:
    return register_upload(collection, io.BytesIO(data), filename, enqueue=False).document


def ingest(document: Document) -> Document:
    pipeline.ingest(document.pk)
    document.refresh_from_db()
    return document


# --- archives and nesting ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory) -> bytes:
    """A Word-shaped zip of ~5 MB that expands to 1.1 GB (deflated zeros)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.docx"
    block = bytes(16 * 1024 * 1024)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
        with archive.open("word/media/padding.bin", "w", force_zip64=True) as member:
            for _ in range(70):
                member.write(block)
    return path.read_bytes()


def test_a_zip_bomb_in_word_clothing_fails_with_a_clear_reason(collection, zip_bomb):
    assert len(zip_bomb) < 10 * 1024 * 1024

    document = ingest(upload(collection, zip_bomb, "quarterly report.docx"))

    assert document.content_type == DOCX
    assert document.status == Document.Status.FAILED
    assert "zip bomb" in document.error
    assert document.chunks.count() == 0


def test_a_smaller_bomb_is_caught_by_its_compression_ratio(collection, tmp_path):
    path = tmp_path / "sheet.xlsx"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        with archive.open("xl/worksheets/sheet1.xml", "w") as member:
            for _ in range(15):
                member.write(bytes(8 * 1024 * 1024))  # 120 MB of zeros, about 120 KB packed

    document = ingest(upload(collection, path.read_bytes(), "sheet.xlsx"))

    assert document.status == Document.Status.FAILED
    assert "zip bomb" in document.error
    assert "fold" in document.error


def test_a_zip_with_too_many_parts_fails_with_a_clear_reason(collection):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
        for number in range(10_001):
            archive.writestr(f"word/p{number}.xml", "")

    document = ingest(upload(collection, buffer.getvalue(), "parts.docx"))

    assert document.status == Document.Status.FAILED
    assert "too many parts" in document.error


def nested_html(depth: int) -> bytes:
    return (
        "<html><body>" + "<div>" * depth + "Deeply held text." + "</div>" * depth + "</body></html>"
    ).encode()


def test_a_page_nested_100k_levels_deep_fails_cleanly_with_the_reason(collection):
    document = ingest(upload(collection, nested_html(100_000), "deep.html"))

    assert document.content_type == HTML
    assert document.status == Document.Status.FAILED
    assert "nested too deeply" in document.error
    assert document.chunks.count() == 0


def test_a_reasonably_nested_page_is_read(collection):
    document = ingest(upload(collection, nested_html(200), "nested.html"))

    assert document.status == Document.Status.READY, document.error
    assert "Deeply held text." in document.chunks.get().text


def test_one_bad_file_does_not_stop_the_next(collection, zip_bomb):
    bad = ingest(upload(collection, nested_html(100_000), "deep.html"))
    good = ingest(upload(collection, f"Notes\n\n{FACT}\n".encode(), "notes.txt"))

    assert bad.status == Document.Status.FAILED
    assert good.status == Document.Status.READY


# --- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hostile", "shown"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\evil.txt", "evil.txt"),
        ("/absolute/path/notes.txt", "notes.txt"),
        ("..\uff0f..\uff0fetc\uff0fpasswd", "passwd"),  # fullwidth solidus
        ("notes\x00.txt", "notes.txt"),
        ("line\r\nbreak.txt", "linebreak.txt"),
        ("invoice\u202etxt.exe", "invoicetxt.exe"),  # bidi override: would show "exe.txt"
        ("....", "unnamed"),
        ("", "unnamed"),
        (".hidden", "hidden"),
    ],
)
def test_hostile_file_names_are_neutralised(hostile, shown):
    assert clean_filename(hostile) == shown


def test_a_very_long_name_is_cut_but_keeps_its_extension():
    name = clean_filename("x" * 400 + ".md")

    assert len(name) == 255
    assert name.endswith(".md")


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "..\\..\\boot.ini", "/tmp/evil.txt"])
def test_files_are_stored_under_random_names_inside_media_root(collection, hostile):
    document = upload(collection, f"{FACT} ({hostile})".encode(), hostile)

    stored = Path(document.file.path).resolve()
    media = Path(settings.MEDIA_ROOT).resolve()
    assert stored.is_relative_to(media / "documents")
    assert re.fullmatch(r"[0-9a-f]{32}", stored.name)
    assert "/" not in document.original_name
    assert "\\" not in document.original_name
    assert ingest(document).status == Document.Status.READY


# --- types judged by content ---------------------------------------------------------------------


def test_a_text_file_named_pdf_is_read_as_text(collection):
    document = ingest(upload(collection, f"Plain notes.\n\n{FACT}\n".encode(), "report.pdf"))

    assert document.content_type == TEXT
    assert document.status == Document.Status.READY
    assert "4.2 million euros" in document.chunks.get().text


def test_a_pdf_named_txt_is_read_as_pdf(collection, tmp_path):
    data = write_pdf(tmp_path / "real.pdf", [("Budget", FACT)]).read_bytes()

    document = ingest(upload(collection, data, "notes.txt"))

    assert document.content_type == PDF
    assert document.status == Document.Status.READY


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"\x7fELF\x02\x01\x01\x00" + bytes(200), "notes.txt"),  # a Linux executable
        (b"MZ\x90\x00" + bytes(200), "report.docx"),  # a Windows executable
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "scan.pdf"),  # an image
    ],
)
def test_a_file_of_an_unsupported_type_is_refused_whatever_its_name(collection, data, filename):
    with pytest.raises(UploadRejected) as refused:
        upload(collection, data, filename)

    assert refused.value.code == "unsupported_type"
    assert not Document.objects.filter(original_name=filename).exists()


def test_a_plain_zip_is_not_mistaken_for_an_office_file(collection):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload/readme.txt", "hello")

    with pytest.raises(UploadRejected) as refused:
        upload(collection, buffer.getvalue(), "report.docx")

    assert refused.value.code == "unsupported_type"


# --- size ------------------------------------------------------------------------------------------


def test_an_oversized_upload_is_refused_while_streaming_and_leaves_no_file(collection, settings):
    settings.RAG_MAX_UPLOAD_MB = 1
    before = {p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()}

    with pytest.raises(UploadRejected) as refused:
        upload(collection, b"a" * (2 * 1024 * 1024), "big.txt")  # no size hint: counted while read

    assert refused.value.code == "too_large"
    assert {p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()} == before


def test_an_empty_upload_is_refused(collection):
    with pytest.raises(UploadRejected) as refused:
        upload(collection, b"", "empty.txt")

    assert refused.value.code == "empty"


# --- who may read the stored files (#10) -----------------------------------------------------------


@pytest.fixture
def fresh_media(settings, tmp_path) -> Path:
    """A media root that does not exist yet, and umask 0 while the test runs: a file or folder
    made with a wide mode and narrowed afterwards would show here as wide, or be caught below."""
    import os

    settings.MEDIA_ROOT = tmp_path / "media"
    old = os.umask(0)
    yield settings.MEDIA_ROOT
    os.umask(old)


_CHMODS: list = []  # [media root, (path, mode), ...] while a test records


def _record_chmod(event: str, args: tuple) -> None:
    if event == "os.chmod" and _CHMODS and str(args[0]).startswith(_CHMODS[0]):
        _CHMODS.append((str(args[0]), args[1]))


def test_stored_files_are_born_private_in_private_folders(collection, fresh_media):
    import stat
    import sys

    if not getattr(_record_chmod, "installed", False):
        sys.addaudithook(_record_chmod)  # hooks cannot be removed: this one only reads a list
        _record_chmod.installed = True
    _CHMODS[:] = [str(fresh_media)]
    try:
        first = upload(collection, b"Owls hunt at night.", "owls.txt")
        second = upload(collection, b"Bats hunt at night.", "bats.txt")
    finally:
        chmods, _CHMODS[:] = _CHMODS[1:], []

    for document in (first, second):
        path = Path(document.file.path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, oct(path.stat().st_mode)
        folder = path.parent
        while True:
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
            if folder == fresh_media:
                break
            folder = folder.parent
        assert path.read_bytes().endswith(b"hunt at night.")
    # Created with the right mode, never made wider and narrowed after. (Django's makedirs
    # repeats a new folder's own mode 0700 with chmod after mkdir: that changes nothing.)
    stored = {document.file.path for document in (first, second)}
    assert not [path for path, _ in chmods if path in stored]
    assert {mode for _, mode in chmods} <= {0o700}
    assert not list(fresh_media.glob(".upload-*")), "no temporary file is left behind"


def test_a_refused_upload_leaves_no_temporary_file(collection, fresh_media):
    with pytest.raises(UploadRejected):
        upload(collection, b"MZ\x90\x00" * 64, "program.exe")
    assert not [p for p in fresh_media.rglob("*") if p.is_file()]
