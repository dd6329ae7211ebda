"""manage.py serve: everything `make run` starts — migrations, the first admin account, a Celery
worker (with the retention schedule) and the uvicorn ASGI server. Ctrl-C (or `make stop`, which
is `manage.py serve --stop`) stops all of it; the embedded PostgreSQL stops with its last user.

The instance writes `serve.pid` under the data dir, so a second start says that one is already
running instead of failing on a busy port, and `--stop` finds what to stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from core.private_files import create_private_file
from ingestion import pipeline

ADMIN_USERNAME = "admin"
PID_FILE = "serve.pid"
STOP_SECONDS = 30  # a worker finishing its document, uvicorn closing connections


@dataclass
class Instance:
    """What serve.pid records: the serving process and its children, each with its start time
    so that a reused pid is not mistaken for them."""

    pid: int
    started: float
    url: str = ""
    children: list[tuple[int, float]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Instance | None:
        try:
            data = json.loads(path.read_text())
            return cls(
                pid=int(data["pid"]),
                started=float(data["started"]),
                url=str(data.get("url", "")),
                children=[(int(p), float(s)) for p, s in data.get("children", [])],
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, path: Path) -> None:
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        draft.write_text(
            json.dumps(
                {
                    "pid": self.pid,
                    "started": self.started,
                    "url": self.url,
                    "children": self.children,
                }
            )
        )
        os.replace(draft, path)

    def create(self, path: Path) -> Instance | None:
        """Write the file unless a live instance wrote it first (two starts at the same moment);
        returns that instance, or None once the file is ours."""
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        self.write(draft)
        try:
            os.link(draft, path)  # never replaces: of two starts, one wins
        except FileExistsError:
            other = Instance.read(path)
            if other is not None and other.serving():
                return other
            os.replace(draft, path)  # a stale file of a stopped instance
        finally:
            draft.unlink(missing_ok=True)
        return None

    def serving(self) -> bool:
        return _alive(self.pid, self.started)

    def live_children(self) -> list[int]:
        return [pid for pid, started in self.children if _alive(pid, started)]


def _alive(pid: int, started: float) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        return (
            abs(process.create_time() - started) < 1.0 and process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def _start_time(pid: int) -> float:
    import psutil

    return psutil.Process(pid).create_time()


class Command(BaseCommand):
    help = "Run ragsite: migrate, create the admin account, start a worker and the web server."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("RAG_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("RAG_PORT", "8000")))
        parser.add_argument(
            "--workers",
            type=int,
            default=int(os.environ.get("RAG_WORKER_CONCURRENCY", "1")),
            help="parallel ingestion processes (each loads the embedding model)",
        )
        parser.add_argument(
            "--stop", action="store_true", help="stop the instance running from this data dir"
        )

    def handle(self, *args, host: str, port: int, workers: int, stop: bool, **options):
        pid_file = settings.DATA_DIR / PID_FILE
        if stop:
            self._stop_instance(pid_file)
            return
        self._refuse_second_instance(pid_file, host, port)
        self._stopping = False
        self._stdout_gone = False
        children: list[subprocess.Popen] = []
        # From here on, Ctrl-C and `make stop` (SIGTERM) ask for an orderly stop.
        signal.signal(signal.SIGINT, self._ask_to_stop)
        signal.signal(signal.SIGTERM, self._ask_to_stop)
        shown_host = "localhost" if host in {"127.0.0.1", "0.0.0.0", "::"} else host  # noqa: S104
        url = f"http://{shown_host}:{port}/"
        instance = Instance(os.getpid(), _start_time(os.getpid()), url)
        if (other := instance.create(pid_file)) is not None:
            raise CommandError(
                f"ragsite is already running from {settings.DATA_DIR} (pid {other.pid})."
            )
        try:
            call_command("migrate", interactive=False, verbosity=0)
            login = self._ensure_admin()
            for command in (self._worker_command(workers), self._web_command(host, port)):
                if self._stopping:
                    break
                child = self._start(command)
                children.append(child)
                instance.children.append((child.pid, _start_time(child.pid)))
                instance.write(pid_file)
            if not self._stopping and self._wait_until_listening(host, port, children):
                self._say(
                    self.style.SUCCESS(f"\nragsite is running at {url}\n")
                    + f"  admin login: {login}\n"
                    + f"  upload console: {url}console/   Django admin: {url}admin/\n"
                    + f"  data: {settings.DATA_DIR}\n"
                    + "  Ctrl-C (or `make stop`) stops everything"
                    + (", the embedded database too.\n" if _embedded_database() else ".\n")
                )
            unexpected = self._wait(children)
        finally:
            # Children first: whatever happened to our output (a closed pipe), nothing is left.
            self._stop_children(children)
            recorded = Instance.read(pid_file)
            if recorded is not None and recorded.pid == os.getpid():
                pid_file.unlink(missing_ok=True)
        self._say("Stopped.")
        if unexpected:
            raise CommandError("The web server or the worker stopped unexpectedly; see above.")

    # --- before starting ----------------------------------------------------------------------
    def _refuse_second_instance(self, pid_file: Path, host: str, port: int) -> None:
        """A clear message instead of "address already in use" after the URL was printed."""
        instance = Instance.read(pid_file)
        if instance is not None and instance.serving():
            raise CommandError(
                f"ragsite is already running from {settings.DATA_DIR} (pid {instance.pid}"
                f"{', ' + instance.url if instance.url else ''}). "
                "Stop it with `make stop` (manage.py serve --stop) or Ctrl-C in its terminal."
            )
        if instance is not None and (leftovers := instance.live_children()):
            raise CommandError(
                "Processes of an earlier `make run` are still running (pids "
                f"{', '.join(map(str, leftovers))}). Stop them with `make stop`."
            )
        if not _port_free(host, port):
            raise CommandError(
                f"Port {port} on {host} is already in use by another program (another ragsite "
                f"with another data dir?). Stop it, or choose another port: RAG_PORT={port + 1} "
                "make run."
            )

    def _ensure_admin(self) -> str:
        """Create the first superuser once. Its generated password is shown this once and kept
        (0600) under the data dir; later starts only say where it is kept."""
        password_file = settings.DATA_DIR / "admin_password"
        User = get_user_model()
        if not User.objects.filter(is_superuser=True).exists():
            given = os.environ.get("RAG_ADMIN_PASSWORD")
            password = given or secrets.token_urlsafe(12)
            User.objects.create_superuser(ADMIN_USERNAME, "", password)
            password_file.unlink(missing_ok=True)  # from an earlier database
            create_private_file(password_file, password)
            if not given:
                return (
                    f"{ADMIN_USERNAME} / {password}\n"
                    f"  (shown this once; kept in {password_file}, readable by you only)"
                )
            return f"{ADMIN_USERNAME}, with the password from RAG_ADMIN_PASSWORD"
        if password_file.exists():
            return f"{ADMIN_USERNAME}, password in {password_file}"
        return "an existing superuser (the password was set outside `make run`)"

    # --- running ------------------------------------------------------------------------------
    def _worker_command(self, workers: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "ragsite",
            "worker",
            "--beat",
            f"--concurrency={workers}",
            "--loglevel=INFO",
            f"--schedule={settings.DATA_DIR / 'celerybeat-schedule'}",
        ]

    def _web_command(self, host: str, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "ragsite.asgi:application",
            "--host",
            host,
            "--port",
            str(port),
            "--no-server-header",
            "--timeout-graceful-shutdown",
            "10",
        ]

    def _start(self, command: list[str]) -> subprocess.Popen:
        # Own sessions: Ctrl-C reaches only us, and we stop the children in order.
        # Children share the embedded database: each bootstraps itself (ragsite.asgi, the worker's
        # start) and so takes its own handle on it; the server stops when the last of us exits.
        return subprocess.Popen(command, cwd=settings.BASE_DIR, start_new_session=True)

    def _ask_to_stop(self, signum, frame) -> None:
        self._stopping = True

    def _wait_until_listening(self, host: str, port: int, children: list[subprocess.Popen]) -> bool:
        """Print the banner once the web server answers, not lost among start-up logs."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self._stopping:
            if any(c.poll() is not None for c in children):
                return False
            try:
                with socket.create_connection((host, port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.3)
        return False

    def _wait(self, children: list[subprocess.Popen]) -> bool:
        """Until asked to stop (False) or a child stops by itself (True)."""
        while not self._stopping and all(child.poll() is None for child in children):
            time.sleep(0.3)
        if not self._stopping:
            self._say("A process stopped unexpectedly; stopping the others.\n", error=True)
            return True
        return False

    def _stop_children(self, children: list[subprocess.Popen]) -> None:
        running = [child for child in children if child.poll() is None]
        if running:
            self._say("Stopping…\n")
        for child in running:
            _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for child in children:
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                killed = _process_tree(child.pid)
                _signal_group(child.pid, signal.SIGKILL)
                child.wait()
                # Stopped by the operator, not by the file: the run does not count against it.
                pipeline.forgive_interrupted_runs(killed)
            _signal_group(child.pid, signal.SIGKILL)  # pool processes the leader left behind

    def _say(self, text: str, error: bool = False) -> None:
        """Write to our output, which may be a pipe whose reader is gone (`make run | tee log`,
        then Ctrl-C): that must never stop us from stopping."""
        if self._stdout_gone and not error:
            return
        stream = self.stderr if error else self.stdout
        try:
            stream.write(text)
            stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            if not error:
                self._stdout_gone = True
                # Later writes, and the interpreter's final flush, go nowhere instead of failing.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)

    # --- make stop ----------------------------------------------------------------------------
    def _stop_instance(self, pid_file: Path) -> None:
        instance = Instance.read(pid_file)
        if instance is None or not (instance.serving() or instance.live_children()):
            pid_file.unlink(missing_ok=True)
            self.stdout.write(f"ragsite is not running from {settings.DATA_DIR}.")
            return
        if instance.serving():
            os.kill(instance.pid, signal.SIGTERM)  # it stops its children, then itself
            deadline = time.monotonic() + STOP_SECONDS + 15
            while instance.serving() and time.monotonic() < deadline:
                time.sleep(0.3)
            if instance.serving():
                os.kill(instance.pid, signal.SIGKILL)
        for pid in instance.live_children():  # left behind by a serve that was killed
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while instance.live_children() and time.monotonic() < deadline:
            time.sleep(0.3)
        for pid in instance.live_children():
            _signal_group(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
        self.stdout.write(f"Stopped ragsite (pid {instance.pid}).")


def _process_tree(pid: int) -> list[int]:
    import psutil

    try:
        parent = psutil.Process(pid)
        return [pid, *(child.pid for child in parent.children(recursive=True))]
    except psutil.Error:
        return [pid]


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (SO_REUSEADDR, as uvicorn binds, so a
    socket of a server stopped a moment ago does not count)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return True  # uvicorn will say what is wrong with the host
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return False
    return True


def _embedded_database() -> bool:
    return settings.EMBEDDED_DB
