"""Importing the settings only reads: tools (the type checker's Django plugin, import-linter,
makemigrations --check, collectstatic while the image is built) load them on a machine with no
data dir and no database, and nothing is created or started. What a running process needs first
is ragsite.bootstrap.prepare()'s job, which every entry point calls: shown here for the worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def fresh_env(data_dir: Path, **extra: str) -> dict:
    """This environment without any database, secret key or ragsite setting: a fresh machine."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAG_", "DJANGO_", "CELERY_")) and k != "DATABASE_URL"
    }
    env.update(RAG_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", **extra)
    return env


def run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def postgres_processes(folder: Path) -> list[str]:
    """PostgreSQL servers whose command line names a path inside `folder`."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            command = " ".join(process.info["cmdline"] or [])
        except psutil.Error:
            continue
        if "postgres" in (process.info["name"] or "") + command and str(folder) in command:
            found.append(f"{process.pid} {command}")
    return found


IMPORT_AND_CHECK = """
    import json
    import ragsite.settings  # what a tool imports
    import django
    django.setup()
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import call_command
    from django.db import connection

    call_command("check")
    # Exits with an error if a model change has no migration; the history check it would make
    # against the database only warns that there is none.
    call_command("makemigrations", check=True, dry_run=True, verbosity=0)
    try:
        key = settings.SECRET_KEY
    except ImproperlyConfigured as refused:
        key = f"refused: {refused}"
    try:
        connection.ensure_connection()
        connected = "connected"
    except Exception as failure:  # noqa: BLE001
        connected = str(failure)
    print(json.dumps({"key": key, "connected": connected, "host": connection.settings_dict["HOST"]}))
"""


def test_importing_the_settings_creates_nothing_and_starts_no_database(tmp_path):
    data_dir = tmp_path / "var"

    done = run_python(IMPORT_AND_CHECK, fresh_env(data_dir))

    assert done.returncode == 0, done.stderr[-3000:]
    assert not data_dir.exists(), sorted(str(p) for p in data_dir.rglob("*"))
    assert list(tmp_path.iterdir()) == []
    assert postgres_processes(tmp_path) == []
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # No key anywhere yet: Django refuses it where one is needed, not when the settings load.
    assert seen["key"].startswith("refused:")
    assert "SECRET_KEY" in seen["key"]
    # Unprepared, the database settings point into the data dir, never at another server here.
    assert seen["host"] == str(data_dir / "pgdata")
    assert str(data_dir / "pgdata") in seen["connected"]


def test_read_only_commands_run_without_a_database_or_a_secret_key(tmp_path):
    """The image build (Dockerfile) collects static files with no database and no key; `make
    lint` checks that every model change has its migration, and nothing is started for it."""
    data_dir = tmp_path / "var"
    static = tmp_path / "static"
    env = fresh_env(data_dir, RAG_STATIC_ROOT=str(static))

    for command in (
        ["check"],
        ["makemigrations", "--check", "--dry-run"],
        ["collectstatic", "--noinput"],
    ):
        done = subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    assert (static / "staticfiles.json").exists() or any(static.iterdir())
    assert not data_dir.exists()
    assert postgres_processes(tmp_path) == []


def test_prepare_makes_the_folders_and_one_private_secret_key(tmp_path):
    data_dir = tmp_path / "var"
    # A DATABASE_URL: only the files are prepared, the embedded server stays out of it.
    env = fresh_env(data_dir, DATABASE_URL="postgresql://nobody@/nothing?host=/nonexistent")
    code = """
        from ragsite import bootstrap
        bootstrap.prepare()
        bootstrap.prepare()  # a second call changes nothing
        from django.conf import settings
        print(settings.SECRET_KEY)
    """

    first = run_python(code, env)
    second = run_python(code, env)

    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    key = (data_dir / "secret_key").read_text().strip()
    assert len(key) >= 50
    assert first.stdout.split() == second.stdout.split() == [key]
    assert (data_dir / "secret_key").stat().st_mode & 0o777 == 0o600
    assert (data_dir / "static").is_dir()
    assert not (data_dir / "pgdata").exists()


def test_a_worker_started_directly_holds_the_embedded_database_while_it_runs(tmp_path):
    """`celery -A ragsite worker` without DATABASE_URL starts the embedded server as it starts
    (not when the settings are imported) and the server stops when the worker exits."""
    data_dir = tmp_path / "var"
    env = fresh_env(data_dir, RAG_BROKER_DIR=str(tmp_path / "broker"), RAG_EGRESS_GUARD="1")
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "ragsite",
            "worker",
            "--pool=solo",
            "--loglevel=INFO",
            "-Q",
            "bootstrap-test",
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
    holders = data_dir / "pgdata" / ".handle_pids.json"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and "ready" not in log.read_text():
            assert worker.poll() is None, log.read_text()[-3000:]
            time.sleep(0.3)
        assert "ready" in log.read_text(), log.read_text()[-3000:]
        assert worker.pid in json.loads(holders.read_text())
        server = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
        assert psutil.pid_exists(server)
        assert (data_dir / "secret_key").stat().st_mode & 0o777 == 0o600
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)

    deadline = time.monotonic() + 30
    while postgres_processes(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert postgres_processes(tmp_path) == [], log.read_text()[-3000:]
