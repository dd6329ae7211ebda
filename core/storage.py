"""Where uploaded files live: a folder (RAG_MEDIA_ROOT, shared by replicas as a mounted volume) or
S3-compatible object storage (RAG_STORAGE_URL, django-storages), and a local path for code that needs one.

Settings import `storage_from_url` (plain parsing, nothing imported or contacted); the object
storage backend (core.object_storage, boto3) is imported by Django when a file is first used.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from django.db.models.fields.files import FieldFile

FILE_SYSTEM = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
OBJECT_STORAGE_BACKEND = "core.object_storage.ObjectStorage"
_URL_OPTIONS = {"endpoint_url", "region", "addressing_style", "max_attempts"}


def storage_from_url(url: str) -> dict[str, Any]:
    """STORAGES["default"] for RAG_STORAGE_URL: empty, the folder RAG_MEDIA_ROOT; else
    `s3://bucket/prefix?endpoint_url=https://minio.internal:9000&region=eu-west-1`, credentials
    from the usual AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)."""
    if not url.strip():
        return dict(FILE_SYSTEM)
    parts = urlsplit(url.strip())
    if parts.scheme != "s3" or not parts.hostname:
        raise ImproperlyConfigured(
            "RAG_STORAGE_URL must look like s3://bucket/prefix?endpoint_url=https://host:9000"
        )
    if parts.username or parts.password:
        raise ImproperlyConfigured(
            "RAG_STORAGE_URL holds no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(query) - _URL_OPTIONS
    if unknown:
        raise ImproperlyConfigured(
            f"RAG_STORAGE_URL: unknown option(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_URL_OPTIONS))}"
        )
    endpoint_url = query.get("endpoint_url") or None
    options: dict[str, Any] = {
        "bucket_name": parts.netloc,
        "location": parts.path.strip("/"),
        "endpoint_url": endpoint_url,
        "region_name": query.get("region") or None,
        # An in-house server is addressed by its own name (path style); virtual hosts would
        # need a DNS name and a certificate per bucket.
        "addressing_style": query.get("addressing_style") or ("path" if endpoint_url else None),
        "default_acl": None,  # the bucket's own policy: private
        # Unsigned URLs: the admin shows a stored file's URL, and a signed one would open the
        # file to whoever holds the link, past the permission check and the audit of downloads.
        # Unsigned, it opens nothing on a private bucket; files go out through the download view.
        "querystring_auth": False,
        "max_attempts": int(query.get("max_attempts") or 3),
    }
    return {"BACKEND": OBJECT_STORAGE_BACKEND, "OPTIONS": options}


def endpoint_hosts(options: dict[str, Any]) -> list[str]:
    """The URLs (scheme and host) the object storage connects to, for the egress rules."""
    region = options.get("region_name")
    endpoint = options.get("endpoint_url") or (
        f"https://s3.{region}.amazonaws.com" if region else "https://s3.amazonaws.com"
    )
    urls = [endpoint]
    if options.get("addressing_style") != "path":
        parts = urlsplit(endpoint)
        urls.append(f"{parts.scheme}://{options['bucket_name']}.{parts.netloc}")
    return urls


@contextmanager
def local_copy(file: FieldFile) -> Iterator[Path]:
    """A path to read the stored file at: the file itself on a folder storage, else a private
    temporary copy (0600, under RAG_MEDIA_ROOT) removed afterwards. FileNotFoundError when the
    stored file is missing."""
    stored = file.name
    if not stored:
        raise FileNotFoundError("no file stored")
    try:
        path = Path(file.storage.path(stored))
    except NotImplementedError:  # object storage: no local path
        path = None
    if path is not None:
        if not path.exists():
            raise FileNotFoundError(stored)
        yield path
        return
    settings.MEDIA_ROOT.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=settings.MEDIA_ROOT, prefix=".copy-")
    try:
        try:
            with os.fdopen(fd, "wb") as target, file.storage.open(stored, "rb") as source:
                shutil.copyfileobj(source, target, 1024 * 1024)
        except Exception as exc:
            if _unreachable(exc):
                # A ConnectionError is what callers retry (ingestion.pipeline.is_transient).
                raise ConnectionError(f"object storage unreachable: {exc}") from exc
            raise
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _unreachable(exc: BaseException) -> bool:
    try:
        from botocore.exceptions import ConnectionError as StorageConnectionError
        from botocore.exceptions import HTTPClientError
    except ImportError:  # pragma: no cover (installed with django-storages[s3])
        return False
    return isinstance(exc, StorageConnectionError | HTTPClientError)
