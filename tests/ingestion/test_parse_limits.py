"""Parser bombs fail alone, with the reason: parsing runs in a lean child process with a memory
and a wall-clock limit, e-mail attachments are not parsed, and Office files that expand past the
limit are refused before anything is unpacked.

The bomb files are built in the test: a PDF whose one content stream inflates from about 1 MB
to 1 GB of zeros (pdfminer inflates a stream in one piece), and an Office zip declaring a part
larger than the limit.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.test import override_settings

from ingestion import sandbox
from ingestion.models import Document
from ingestion.parsing import (
    DOCX,
    EMAIL,
    HTML,
    MAX_UNCOMPRESSED_BYTES,
    PDF,
    ParseError,
    parse,
)
from tests.documents import write_docx


def zeros_deflate(megabytes: int) -> bytes:
    """A zlib stream of `megabytes` MB of zeros, about 1 KB per MB, built without compressing
    the whole: after a full flush every 1 MB block of zeros compresses to the same bytes."""
    zeros = bytes(1 << 20)
    compressor = zlib.compressobj(9)
    head = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush(zlib.Z_FINISH)[:-4]  # its checksum is for 2 MB; ours follows
    total = megabytes << 20
    adler32 = ((total % 65521) << 16) | 1  # Adler-32 of `total` zero bytes
    return head + block * (megabytes - 1) + end + struct.pack(">I", adler32)


def write_bomb_pdf(path: Path, megabytes: int) -> Path:
    stream = zeros_deflate(megabytes)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(bytes(out))
    return path


def test_the_bomb_is_small_on_disk_and_really_inflates(tmp_path):
    data = zeros_deflate(8)
    assert len(data) < 10_000
    assert zlib.decompress(data) == bytes(8 << 20)


@override_settings(RAG_PARSE_MEMORY_MB=128)
def test_a_pdf_stream_inflating_past_the_memory_limit_fails_with_the_reason(tmp_path):
    bomb = write_bomb_pdf(tmp_path / "bomb.pdf", 1024)
    assert bomb.stat().st_size < 2 * 2**20

    with pytest.raises(ParseError, match="needs more than 128 MB of memory"):
        parse(bomb, PDF)


@override_settings(RAG_PARSE_TIMEOUT=1)
def test_parsing_past_the_time_limit_is_stopped_with_the_reason(tmp_path):
    # 64 MB of zeros fit in memory, but reading them as page content takes pdfminer minutes.
    slow = write_bomb_pdf(tmp_path / "slow.pdf", 64)

    with pytest.raises(ParseError, match="took longer than 1 s"):
        parse(slow, PDF)


@override_settings(RAG_PARSE_MEMORY_MB=128)
def test_a_bomb_fails_alone_and_the_next_document_is_parsed(tmp_path, collection, ingest_file):
    bomb = ingest_file(collection, write_bomb_pdf(tmp_path / "bomb.pdf", 1024))
    page = tmp_path / "after.html"
    page.write_text("<html><body><main><h1>After</h1><p>Still parsed.</p></main></body></html>")

    after = ingest_file(collection, page)

    assert bomb.status == Document.Status.FAILED
    assert "needs more than 128 MB" in bomb.error
    assert after.status == Document.Status.READY, after.error
    assert [c.text for c in after.chunks.all()] == ["Still parsed."]


def test_the_parsing_process_does_not_load_the_embedding_model(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<html><body><p>Hello.</p></body></html>")
    parse(page, HTML)  # starts the helper if this test runs first

    pid = sandbox.helper_pid()
    assert pid is not None
    libraries = Path(f"/proc/{pid}/maps").read_text()
    assert "libxml2" in libraries or "etree" in libraries  # the parsers are loaded
    assert "torch" not in libraries


def test_email_attachments_are_listed_by_name_but_not_parsed(tmp_path):
    message = EmailMessage()
    message["From"] = "alice@example.org"
    message["To"] = "team@example.org"
    message["Subject"] = "Quarterly figures"
    message.set_content("The figures are attached.")
    message.add_attachment(
        b"Attachment body text that must not be indexed.",
        maintype="text",
        subtype="plain",
        filename="figures.txt",
    )
    message.add_attachment(
        write_docx(
            tmp_path / "plan.docx", "Plan", [("Goal", "Docx attachment text.")]
        ).read_bytes(),
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
        filename="plan.docx",
    )
    eml = tmp_path / "message.eml"
    eml.write_bytes(bytes(message))

    parsed = parse(eml, EMAIL)

    assert parsed.title == "Quarterly figures"
    assert [b.text for b in parsed.blocks] == [
        "The figures are attached.",
        "Attachments (not indexed; upload them as documents of their own): figures.txt, plan.docx",
    ]


def test_an_office_file_declaring_more_than_the_limit_is_refused_before_unpacking(tmp_path):
    # Real-looking ratio (a stored, incompressible image), but one part claims 300 MB.
    path = tmp_path / "huge.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
        archive.writestr("word/media/image1.png", bytes(range(256)) * 16384)  # 4 MB stored
    data = bytearray(path.read_bytes())
    # Patch the declared uncompressed size of word/document.xml in the central directory.
    entry = data.index(b"PK\x01\x02")  # central directory entries: name at offset 46
    while data[entry + 46 : entry + 46 + 17] != b"word/document.xml":
        entry = data.index(b"PK\x01\x02", entry + 4)
    declared = 300 * 2**20
    data[entry + 24 : entry + 28] = struct.pack("<I", declared)
    path.write_bytes(bytes(data))
    assert declared < MAX_UNCOMPRESSED_BYTES * 2  # the old 1 GB limit let this through

    with pytest.raises(ParseError, match="expands to more than 256 MB"):
        parse(path, DOCX)


def test_a_parsing_helper_killed_from_outside_is_replaced_on_the_next_file(tmp_path):
    import os
    import signal

    page = tmp_path / "page.html"
    page.write_text("<html><body><main><p>First.</p></main></body></html>")
    parse(page, HTML)
    first = sandbox.helper_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)  # the OOM killer, an operator

    assert [b.text for b in parse(page, HTML).blocks] == ["First."]
    assert sandbox.helper_pid() not in {None, first}
