"""Uploaded files on S3-compatible object storage (RAG_STORAGE_URL), against moto's S3 server on
loopback, which speaks the real protocol over HTTP: upload, process, search, download, delete."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import storages
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from core import apikeys, egress
from core.storage import storage_from_url
from ingestion import pipeline
from ingestion.models import Document
from retrieval.search import search
from tests.conftest import make_collection, required

try:
    import boto3
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
except ImportError:  # the test extra is not installed: the S3 tests skip (fail under CI=true)
    boto3 = ThreadedMotoServer = None

needs_s3 = required(
    ThreadedMotoServer is not None,
    "moto[s3], flask and boto3 are not installed (pip install -e '.[test]'): no S3 server to test "
    "against",
)
pytestmark = pytest.mark.django_db

BUCKET = "ragsite-test"
NOTE = (
    b"# Harbour logistics\n\n## Cranes\n\n"
    b"The quayside cranes at berth nine are serviced every Thursday by the Kestrel crew.\n"
)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, monkeypatch, settings):
    """RAG_STORAGE_URL pointing at an empty bucket of the stand-in; yields a boto3 Bucket."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    resource = boto3.resource("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = resource.Bucket(BUCKET)
    bucket.create()
    settings.STORAGES = {
        **settings.STORAGES,
        "default": storage_from_url(
            f"s3://{BUCKET}/uploads?endpoint_url={s3_endpoint}&region=us-east-1"
        ),
    }
    yield bucket
    bucket.objects.all().delete()
    bucket.delete()


def keys(bucket) -> list[str]:
    return sorted(item.key for item in bucket.objects.all())


@needs_s3
def test_a_document_lives_in_the_bucket_from_upload_to_deletion(
    bucket, settings, django_capture_on_commit_callbacks
):
    owner = User.objects.create_superuser("editor", "editor@example.org", "a-long-test-password")
    collection = make_collection("Harbour", users=[owner])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {apikeys.create_key(owner, 'tests')[1]}")
    local_before = set(settings.MEDIA_ROOT.rglob("*"))

    uploaded = api.post(
        "/api/v1/documents/",
        {"collection": collection.pk, "files": [_upload("cranes.md", NOTE)]},
        format="multipart",
    )
    assert uploaded.status_code == 201, uploaded.content
    document = Document.objects.get(pk=uploaded.json()["documents"][0]["id"])
    assert keys(bucket) == [f"uploads/{document.file.name}"]
    assert bucket.Object(f"uploads/{document.file.name}").get()["Body"].read() == NOTE

    result = pipeline.ingest(document.pk)

    assert result.status == "ready", result.error
    # Parsed from a temporary local copy that is gone again; nothing stored locally.
    assert set(settings.MEDIA_ROOT.rglob("*")) == local_before
    passages = search(owner, "Who services the quayside cranes?")
    assert passages
    assert passages[0].document_id == document.pk

    browser = Client()
    browser.force_login(owner)
    download = browser.get(reverse("web:download", args=[document.pk]))
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == NOTE

    # The admin links the stored file: never with a signature that would open it to anyone.
    admin_page = browser.get(reverse("admin:ingestion_document_change", args=[document.pk]))
    assert admin_page.status_code == 200
    assert document.file.name in admin_page.content.decode()
    assert "Signature" not in admin_page.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        deleted = api.delete(f"/api/v1/documents/{document.pk}/")
    assert deleted.status_code == 204
    assert keys(bucket) == []


@needs_s3
def test_a_missing_object_fails_the_document_and_its_download_is_not_found(bucket):
    owner = User.objects.create_user("editor", password="a-long-test-password", is_superuser=True)
    collection = make_collection("Harbour", users=[owner])
    browser = Client()
    browser.force_login(owner)
    upload = browser.post(
        reverse("console:upload", args=[collection.pk]),
        {"file": _upload("cranes.md", NOTE)},
        HTTP_ACCEPT="application/json",
    )
    assert upload.status_code == 201, upload.content
    document = Document.objects.get(pk=upload.json()["document"]["id"])
    bucket.Object(f"uploads/{document.file.name}").delete()

    result = pipeline.ingest(document.pk)

    assert result.status == "failed"
    assert "stored file is missing" in result.error
    assert browser.get(reverse("web:download", args=[document.pk])).status_code == 404


@needs_s3
def test_a_storage_host_outside_the_egress_rules_is_refused_before_any_connection(settings):
    settings.RAG_ALLOWED_HOSTS_EGRESS = ["llm.internal"]
    settings.STORAGES = {
        **settings.STORAGES,
        "default": storage_from_url("s3://docs?endpoint_url=https://minio.example.com:9000"),
    }
    refusals = len(egress.violations)

    with pytest.raises(
        ImproperlyConfigured, match=r"minio\.example\.com.*RAG_ALLOWED_HOSTS_EGRESS"
    ):
        storages["default"]

    # Without an endpoint it is AWS, bucket-named hosts included: refused too unless listed.
    settings.STORAGES = {**settings.STORAGES, "default": storage_from_url("s3://docs")}
    with pytest.raises(ImproperlyConfigured, match=r"s3\.amazonaws\.com"):
        storages["default"]
    assert len(egress.violations) == refusals  # nothing was even looked up


@needs_s3
@pytest.mark.egress_refusal_expected("minio.internal")
def test_an_allowed_storage_host_still_goes_through_the_egress_guard(settings, monkeypatch):
    # boto3 connects with urllib3 over Python sockets: the test suite's guard (loopback only)
    # sees the connection, so an allow-listed name is contacted only where it really may be.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings.RAG_ALLOWED_HOSTS_EGRESS = ["minio.internal"]
    settings.STORAGES = {
        **settings.STORAGES,
        "default": storage_from_url(
            "s3://docs?endpoint_url=http://minio.internal:9000&region=us-east-1&max_attempts=1"
        ),
    }
    refusals = len(egress.violations)

    with pytest.raises(ConnectionError):
        _open_through_the_pipeline_helper()

    assert any("minio.internal" in v for v in egress.violations[refusals:])


def _open_through_the_pipeline_helper() -> None:
    from core.storage import local_copy

    class Stored:  # a FieldFile's two attributes local_copy reads
        name = "documents/absent"
        storage = storages["default"]

    with local_copy(Stored()):  # type: ignore[arg-type]
        pass


@pytest.mark.parametrize(
    ("url", "options"),
    [
        (
            "s3://docs/ragsite/uploads?endpoint_url=https://minio.internal:9000&region=eu-west-1",
            {
                "bucket_name": "docs",
                "location": "ragsite/uploads",
                "endpoint_url": "https://minio.internal:9000",
                "region_name": "eu-west-1",
                "addressing_style": "path",
            },
        ),
        (
            "s3://docs",
            {"bucket_name": "docs", "location": "", "endpoint_url": None, "addressing_style": None},
        ),
    ],
)
def test_the_storage_url_names_bucket_prefix_endpoint_and_region(url, options):
    parsed = storage_from_url(url)
    assert parsed["BACKEND"] == "core.object_storage.ObjectStorage"
    assert parsed["OPTIONS"].items() >= options.items()
    assert storage_from_url("")["BACKEND"].endswith("FileSystemStorage")


@pytest.mark.parametrize(
    "url",
    [
        "https://minio.internal/docs",
        "s3://key:secret@docs",
        "s3://docs?endpoint=https://minio.internal",
    ],
)
def test_a_malformed_storage_url_is_refused_with_the_form_expected(url):
    with pytest.raises(ImproperlyConfigured, match="RAG_STORAGE_URL"):
        storage_from_url(url)


def _upload(name: str, content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content, content_type="text/markdown")
