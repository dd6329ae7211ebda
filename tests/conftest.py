"""Shared fixtures: isolated media and broker folders, a real Celery worker process, users and
collections. The database is the embedded PostgreSQL with pgvector (pytest-django's test DB),
started below, or the server DATABASE_URL names."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection

from ingestion.models import Collection, Document
from ragsite import bootstrap

# pytest-django set Django up before this module was imported, and nothing has connected yet: the
# embedded server starts here and fills in the settings from which the test database is made.
bootstrap.prepare()

ROOT = Path(__file__).resolve().parent.parent
SHARED_EVAL = ROOT.parent / "shared" / "eval" / "dev"
REDIS_URL = "redis://127.0.0.1:6379/0"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_or_skip(reason: str) -> None:
    """Something a test needs is missing (a browser, Redis, the development set): skip the test
    on a developer's machine, but under CI=true fail it, since there the build must prove it."""
    if in_ci():
        pytest.fail(f"missing in CI (CI=true), so this fails instead of skipping: {reason}")
    pytest.skip(reason)


def required(available: bool, reason: str) -> pytest.MarkDecorator:
    """The mark form of require_or_skip, for decorators and parameters."""
    if available:
        return pytest.mark.skipif(False, reason=reason)
    return pytest.mark.missing_requirement(reason)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "missing_requirement(reason): needs something absent here; skipped, or failed under CI=true",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    marker = item.get_closest_marker("missing_requirement")
    if marker is not None:
        require_or_skip(marker.args[0])


def redis_available() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def _isolated_media(tmp_path_factory) -> Iterator[Path]:
    """Uploaded files of this test session go to a temporary folder, never to var/media."""
    from django.test import override_settings

    media = tmp_path_factory.mktemp("media")
    override = override_settings(MEDIA_ROOT=media)
    override.enable()
    yield media
    override.disable()


class QueueFolder:
    """This test's own broker: kombu's filesystem transport in a temporary folder. What the code
    sends (on commit) really is published, and lands here as one file per message; nobody consumes
    it, so a test can read exactly what was queued."""

    def __init__(self, folder: Path, queue: str):
        self.folder = folder
        self.queue = queue

    def messages(self) -> list[dict]:
        """Each queued message, oldest first: {"task": name, "args": [...], "queue": name}."""
        import base64
        import json

        found = []
        for path in sorted(self.folder.glob("*.msg")):
            message = json.loads(path.read_text(encoding="utf-8"))
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            found.append(
                {
                    "task": message["headers"]["task"],
                    "args": args,
                    "queue": message["properties"]["delivery_info"]["routing_key"],
                }
            )
        return found

    def document_ids(self) -> list[int]:
        """The documents an ingest task was queued for, in the order they were sent."""
        return [
            m["args"][0] for m in self.messages() if m["task"] == "ingestion.tasks.ingest_document"
        ]


@pytest.fixture(autouse=True)
def task_queue(request, tmp_path_factory) -> Iterator[QueueFolder | None]:
    """Every test without a worker gets a private, empty queue folder: the real enqueue path runs
    (run on-commit callbacks with django_capture_on_commit_callbacks(execute=True) to send), and
    nothing is left in a queue a later worker would read. Tests with the `worker` fixture keep the
    session's queue, which their worker consumes."""
    if "worker" in request.fixturenames or "celery_queue" in request.fixturenames:
        yield None
        return
    from ragsite.celery import app

    folder = tmp_path_factory.mktemp("queue")
    queue = f"ragsite-test-{uuid.uuid4().hex[:8]}"
    saved = {
        key: app.conf[key]
        for key in ("broker_url", "broker_transport_options", "task_default_queue")
    }
    _use_folder_broker(app, folder, queue)
    yield QueueFolder(folder, queue)
    for key, value in saved.items():
        app.conf[key] = value
    _reset_connections(app)


class WorkerHandle:
    def __init__(self, process: subprocess.Popen, broker: str, log: Path):
        self.process = process
        self.broker = broker
        self.log = log

    def wait_for(self, document_ids: list[int], timeout: float = 180) -> list[Document]:
        """Block until every document is ready or failed (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            documents = list(Document.objects.filter(pk__in=document_ids))
            if documents and all(d.status in {"ready", "failed"} for d in documents):
                return documents
            if self.process.poll() is not None:
                raise AssertionError(f"worker died:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.3)
        raise AssertionError(
            f"documents not done in {timeout}s; worker log:\n{self.log.read_text()[-3000:]}"
        )


def _broker_params() -> list:
    params = [pytest.param("filesystem", id="filesystem-broker")]
    params.append(
        pytest.param(
            "redis",
            id="redis-broker",
            marks=required(redis_available(), "no Redis on 127.0.0.1:6379"),
        )
    )
    return params


@pytest.fixture(scope="session", params=_broker_params())
def celery_queue(request, tmp_path_factory, django_db_setup, django_db_blocker) -> Iterator[dict]:
    """Point this process's Celery app at a private queue: a fresh filesystem broker folder, or a
    uniquely named queue on the local Redis. Returns the environment a worker needs to share it."""
    from ragsite.celery import app

    queue = f"ragsite-test-{uuid.uuid4().hex[:8]}"
    env = {"RAG_CELERY_QUEUE": queue, "RAG_MEDIA_ROOT": str(settings.MEDIA_ROOT)}
    if request.param == "redis":
        env["CELERY_BROKER_URL"] = REDIS_URL
        app.conf.broker_url = REDIS_URL
        app.conf.broker_transport_options = {"visibility_timeout": 60}
    else:
        folder = tmp_path_factory.mktemp("broker")
        env["CELERY_BROKER_URL"] = "filesystem://"
        env["RAG_BROKER_DIR"] = str(folder)
        _use_folder_broker(app, folder, queue)
    app.conf.task_default_queue = queue
    _reset_connections(app)
    yield {"broker": request.param, "env": env, "queue": queue}
    _reset_connections(app)


def _use_folder_broker(app, folder: Path, queue: str) -> None:
    """Point this process's Celery app at kombu's filesystem transport in `folder` (the same
    options ragsite.celeryconfig derives from RAG_BROKER_DIR), sending to `queue`."""
    app.conf.broker_url = "filesystem://"
    app.conf.broker_transport_options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }
    app.conf.task_default_queue = queue
    _reset_connections(app)


def _reset_connections(app) -> None:
    """Drop pooled broker connections so the next send uses the broker configured now.

    kombu keeps its connection and producer pools in process-wide registries keyed by the broker
    URL and options, and `app.pool` is the registry's entry: closing it alone leaves a closed pool
    registered, which the next fixture pointing at the same broker would get back ("Acquire on
    closed pool"). `kombu.pools.reset()` closes them and empties the registries."""
    from kombu import pools

    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None


def database_url() -> str:
    """The test database as a DATABASE_URL, for processes the tests start (workers, servers)
    and second connections of their own."""
    db = connection.settings_dict
    if db["PORT"]:
        return f"postgresql://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return f"postgresql://{db['USER']}:{db['PASSWORD']}@/{db['NAME']}?host={db['HOST']}"


def load_bench():
    """bench/load_answers.py as a module (bench/ is no package): its server start and load."""
    if "load_answers" in sys.modules:
        return sys.modules["load_answers"]
    spec = importlib.util.spec_from_file_location(
        "load_answers", ROOT / "bench" / "load_answers.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_answers"] = module
    spec.loader.exec_module(module)
    return module


def start_worker(celery_queue: dict, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        **celery_queue["env"],
        "DATABASE_URL": database_url(),
        "RAG_EGRESS_GUARD": "1",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "ragsite",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--loglevel=INFO",
            "-Q",
            celery_queue["queue"],
            "-n",
            f"{celery_queue['queue']}@%h",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_worker(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def worker(celery_queue, tmp_path_factory) -> Iterator[WorkerHandle]:
    """A real Celery worker process consuming this session's queue, against the test database."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    process = start_worker(celery_queue, log)
    handle = WorkerHandle(process, celery_queue["broker"], log)
    yield handle
    stop_worker(process)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole test: bound, so no other program
    can listen on it meanwhile, but not listening (unlike a probe closed at once, or port 9)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@pytest.fixture
def user(db) -> User:
    return User.objects.create_user("staff", password="a-long-test-password")


@pytest.fixture
def admin_user(db) -> User:
    return User.objects.create_superuser("admin", "admin@example.org", "a-long-test-password")


def make_collection(
    name: str, *, everyone: bool = False, groups: list[Group] = (), users: list[User] = ()
) -> Collection:
    collection = Collection.objects.create(
        name=name,
        visibility=Collection.Visibility.EVERYONE if everyone else Collection.Visibility.RESTRICTED,
    )
    collection.reader_groups.set(groups)
    collection.reader_users.set(users)
    return collection


@pytest.fixture
def collection(db) -> Collection:
    return make_collection("Handbook", everyone=True)


@pytest.fixture
def ingest_file(db) -> Callable[..., Document]:
    """Register a file and run the pipeline in this process; returns the refreshed Document."""
    from ingestion import pipeline, services

    def ingest(collection: Collection, path: Path, user: User | None = None) -> Document:
        result = services.register_path(collection, path, user, enqueue=False)
        pipeline.ingest(result.document.pk)
        result.document.refresh_from_db()
        return result.document

    return ingest
