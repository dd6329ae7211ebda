"""manage.py serve: everything `make run` starts — migrations, the first admin account, a Celery
worker (with the retention schedule) and the uvicorn ASGI server; Ctrl-C stops all of it."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

ADMIN_USERNAME = "admin"


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

    def handle(self, *args, host: str, port: int, workers: int, **options):
        call_command("migrate", interactive=False, verbosity=0)
        login = self._ensure_admin()
        children = [
            self._start(
                [
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
            ),
            self._start(
                [
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
            ),
        ]
        shown_host = "localhost" if host in {"127.0.0.1", "0.0.0.0", "::"} else host  # noqa: S104
        self._wait_until_listening(host, port, children)
        self.stdout.write(
            self.style.SUCCESS(f"\nragsite is running at http://{shown_host}:{port}/\n")
            + f"  admin login: {login}\n"
            + f"  upload console: http://{shown_host}:{port}/console/   Django admin: http://{shown_host}:{port}/admin/\n"
            + f"  data: {settings.DATA_DIR}   Ctrl-C stops everything.\n"
        )
        self._wait(children)

    def _ensure_admin(self) -> str:
        """Create the first superuser once; its password is kept (0600) under the data dir."""
        password_file = settings.DATA_DIR / "admin_password"
        User = get_user_model()
        if not User.objects.filter(is_superuser=True).exists():
            password = os.environ.get("RAG_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            User.objects.create_superuser(ADMIN_USERNAME, "", password)
            password_file.write_text(password)
            password_file.chmod(0o600)
        if password_file.exists():
            return (
                f"{ADMIN_USERNAME} / {password_file.read_text().strip()}  (kept in {password_file})"
            )
        return "an existing superuser (the password was set outside `make run`)"

    def _start(self, command: list[str]) -> subprocess.Popen:
        # Children share the embedded database: each takes its own handle on it.
        return subprocess.Popen(command, cwd=settings.BASE_DIR, start_new_session=True)

    def _wait_until_listening(self, host: str, port: int, children: list[subprocess.Popen]) -> None:
        """Print the banner once the web server answers, not lost among start-up logs."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and all(c.poll() is None for c in children):
            try:
                with socket.create_connection((host, port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)

    def _wait(self, children: list[subprocess.Popen]) -> None:
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
        if not stopping:
            self.stderr.write("A process stopped unexpectedly; stopping the others.")
        self.stdout.write("Stopping…")
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for child in children:
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        self.stdout.write("Stopped.")
