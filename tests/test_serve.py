"""`make run` (manage.py serve) as a real process with its own data dir and embedded database:
Ctrl-C with its output piped into a reader that is gone stops every process it started, the
database included; a second start says one is running; `make stop` stops it; the admin password
is shown at the first start only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
START_SECONDS = 240  # a first start creates the database and migrates it


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_env(data_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "CELERY_"))}
    env.pop("DATABASE_URL", None)
    env.pop("DJANGO_SECRET_KEY", None)
    env.update(RAG_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", RAG_LOG_LEVEL="WARNING")
    return env


def manage(data_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=serve_env(data_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Served:
    """A `manage.py serve` whose stdout is a pipe this test reads, like `| tee`."""

    def __init__(self, data_dir: Path, port: int, log: Path):
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=ROOT,
            env=serve_env(data_dir),
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
        )
        self.banner = self._read_banner()

    def _read_banner(self) -> str:
        lines = []
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            line = self.process.stdout.readline().decode()
            if not line:
                raise AssertionError(f"serve exited:\n{self.log.read_text()[-3000:]}")
            lines.append(line)
            if "stops everything" in line:
                return "".join(lines)
        raise AssertionError(f"no banner in {START_SECONDS}s:\n{self.log.read_text()[-3000:]}")

    def processes(self) -> list[psutil.Process]:
        """Every process it started, and the embedded PostgreSQL server (not its child)."""
        found = psutil.Process(self.process.pid).children(recursive=True)
        return [psutil.Process(self.process.pid), *found]

    def wait(self, timeout: float = 90) -> int:
        return self.process.wait(timeout=timeout)


def postmaster(data_dir: Path) -> psutil.Process:
    pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    return psutil.Process(pid)


def survivors(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {' '.join(process.cmdline()[:4])}")
        except psutil.NoSuchProcess:
            continue
    return alive


def wait_gone(processes: list[psutil.Process], timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while (alive := survivors(processes)) and time.monotonic() < deadline:
        time.sleep(0.3)
    return alive


@pytest.fixture
def data_dir(tmp_path) -> Path:
    path = tmp_path / "var"
    yield path
    # Whatever a failed assertion left running goes, so the next tests run on a quiet machine.
    manage(path, "serve", "--stop", timeout=90)


def test_ctrl_c_with_a_closed_pipe_stops_everything_and_a_second_start_is_refused(
    data_dir, tmp_path
):
    port = free_port()
    first = Served(data_dir, port, tmp_path / "first.log")
    started = first.processes()
    database = postmaster(data_dir)
    kinds = " ".join(" ".join(p.cmdline()) for p in started)
    assert "celery" in kinds
    assert "uvicorn" in kinds

    # First start: the generated password is shown, and kept readable by its owner only.
    password = (data_dir / "admin_password").read_text()
    assert password in first.banner
    assert (data_dir / "admin_password").stat().st_mode & 0o777 == 0o600

    # A second start from the same data dir says so, before touching anything.
    second = manage(data_dir, "serve", "--port", str(port))
    assert second.returncode != 0
    assert "already running" in second.stderr
    assert "make stop" in second.stderr
    assert "is running at" not in second.stdout

    # `make run | tee log`, then Ctrl-C: tee is gone before serve writes "Stopping…".
    first.process.stdout.close()
    first.process.send_signal(signal.SIGINT)
    first.wait()
    assert wait_gone([*started, database]) == [], first.log.read_text()[-3000:]
    assert not (data_dir / "serve.pid").exists()

    # A program on the port: a clear message instead of "address already in use" later.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        refused = manage(data_dir, "serve", "--port", str(port))
    assert refused.returncode != 0
    assert f"Port {port}" in refused.stderr
    assert "in use" in refused.stderr

    # A holder of the embedded database that was killed (out of memory) is not waited for.
    (data_dir / "pgdata" / ".handle_pids.json").write_text("[999999999]")

    # Later starts do not print the password (it would land in logs): they say where it is.
    again = Served(data_dir, port, tmp_path / "again.log")
    started = again.processes()
    database = postmaster(data_dir)
    assert password not in again.banner
    assert str(data_dir / "admin_password") in again.banner

    stopped = manage(data_dir, "serve", "--stop")  # make stop
    assert stopped.returncode == 0, stopped.stderr
    assert again.wait() == 0
    assert wait_gone([*started, database]) == [], again.log.read_text()[-3000:]

    # A serve killed outright leaves its children: the next start names them, `make stop` ends
    # them, and the database stops with the last of them.
    killed = Served(data_dir, port, tmp_path / "killed.log")
    started = killed.processes()
    database = postmaster(data_dir)
    killed.process.kill()
    killed.wait()
    refused = manage(data_dir, "serve", "--port", str(port))
    assert refused.returncode != 0
    assert "still running" in refused.stderr
    assert "make stop" in refused.stderr
    stopped = manage(data_dir, "serve", "--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert wait_gone([*started, database]) == [], killed.log.read_text()[-3000:]
