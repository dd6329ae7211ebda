"""What a ragsite process needs before Django touches its data: the data folders, the secret key
file, and (without DATABASE_URL) the embedded PostgreSQL, started or reused, in the settings.

Importing ragsite.settings does none of this (it only reads), so every entry point calls
prepare() first: manage.py, ragsite/asgi.py, ragsite/wsgi.py, the Celery worker (ragsite/celery.py)
and the test suite (tests/conftest.py). Django reads DATABASES at its first connection, so filling
them in here, after the settings were loaded, is in time as long as nothing has connected yet.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from typing import cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.private_files import create_private_file

_prepared: set[str] = set()


def prepare(*, database: bool = True) -> None:
    """Ready this process: folders, secret key, and with `database` the embedded server (a
    handle on it: the server stops when the last process holding one exits). Idempotent."""
    if "files" not in _prepared:
        settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
        # WhiteNoise warns about a missing static folder.
        settings.STATIC_ROOT.mkdir(parents=True, exist_ok=True)
        _ensure_secret_key()
        _prepared.add("files")
    if "metrics" not in _prepared:
        _prepare_metrics_dir()
        _prepared.add("metrics")
    if database and "database" not in _prepared:
        if settings.EMBEDDED_DB:
            from ragsite.embedded_db import ensure_server

            # In place: a connection object made before this (not yet connected) sees it too.
            default = settings.DATABASES["default"]
            default.update(ensure_server(settings.EMBEDDED_DB_DIR, default["NAME"]))
            if settings.DATABASE_POOL:
                options = cast(dict, default["OPTIONS"])  # the settings' own dict, in place
                options["pool"] = dict(settings.DATABASE_POOL)
        _prepared.add("database")


def _prepare_metrics_dir() -> None:
    """Prometheus multiprocess mode (core.metrics): each process writes its values to files in
    this host's folder under RAG_METRICS_DIR, named in PROMETHEUS_MULTIPROC_DIR before anything
    imports prometheus_client (which reads it once). One folder per host name, so containers
    sharing the data dir never share a file (their process ids may be the same); /metrics reads
    them all. An operator's own PROMETHEUS_MULTIPROC_DIR is kept (and never compacted: its
    processes may live in other process-id namespaces)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], mode=0o700, exist_ok=True)
        return
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()).strip(".") or "host"
    folder = settings.RAG_METRICS_DIR / host
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    from core import metrics  # after the variable: prometheus_client reads it on import

    metrics.compact(folder)  # the files of this host's exited processes, folded into one


def _ensure_secret_key() -> None:
    """Without DJANGO_SECRET_KEY: generate the key file once, 0600 from its creation (never
    readable by others, not even between a write and a chmod), and use what it holds."""
    try:
        if settings.SECRET_KEY:
            return
    except ImproperlyConfigured:  # empty: neither the environment nor the file has one yet
        pass
    path = settings.SECRET_KEY_FILE
    # Two processes starting at once (the web server and a worker) end up with the one file
    # whichever of them came first made.
    create_private_file(path, secrets.token_urlsafe(50))
    settings.SECRET_KEY = path.read_text().strip()
