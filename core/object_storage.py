"""The S3-compatible backend for uploaded files (RAG_STORAGE_URL): django-storages' S3Storage,
allowed only to hosts the egress rules allow, through no proxy, with bounded retries.

Imported by Django's storage handler when a file is first stored or read, never by settings.
"""

from __future__ import annotations

from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

from core import egress
from core.storage import endpoint_hosts


class ObjectStorage(S3Storage):
    def __init__(self, **options: Any) -> None:
        max_attempts = options.pop("max_attempts", 3)
        for url in endpoint_hosts(options):
            if not egress.endpoint_allowed(url, settings.RAG_ALLOWED_HOSTS_EGRESS):
                raise ImproperlyConfigured(
                    f"RAG_STORAGE_URL: {url} is outside loopback and RAG_ALLOWED_HOSTS_EGRESS; "
                    "add the storage host to the allow-list"
                )
        options.setdefault(
            "client_config",
            Config(
                s3={"addressing_style": options.get("addressing_style")},
                # {} rather than None: botocore would take HTTP(S)_PROXY from the environment.
                proxies={},
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            ),
        )
        super().__init__(**options)

    def _open(self, name: str, mode: str = "rb") -> Any:
        """Reading streams the object as it arrives (a download of a large file starts at once
        and holds no copy); writing is django-storages' own."""
        if mode != "rb":
            return super()._open(name, mode)
        key = self._normalize_name(clean_name(name))
        try:
            response = self.connection.meta.client.get_object(Bucket=self.bucket_name, Key=key)
        except ClientError as err:
            if err.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                raise FileNotFoundError(f"File does not exist: {name}") from err
            raise
        return StreamedObject(response["Body"], name, response["ContentLength"])


class StreamedObject:
    """A stored object being read: read(n) and close(), for shutil and FileResponse. Neither
    seek nor tell: FileResponse then sends it chunked, as it arrives."""

    def __init__(self, body: Any, name: str, size: int) -> None:
        self._body = body
        self.name = name
        self.size = size

    def read(self, size: int = -1) -> bytes:
        return self._body.read(None if size is None or size < 0 else size)

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> StreamedObject:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
