"""Browser fixtures: Debian's chromium driven by Playwright (sync API) against pytest-django's
live server. Every page records dialogs and console errors so tests can assert there were none."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import require_or_skip, required

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 375, "height": 740}
PASSWORD = "a-long-test-password"


def pytest_collection_modifyitems(items):
    if CHROMIUM.exists():
        return
    # Skipped on a developer's machine without a browser; failed under CI=true.
    missing = required(False, f"{CHROMIUM} is not installed (apt-get install chromium)")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(missing)


# Per module, so Playwright's event loop is gone before tests of other folders run.
@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not CHROMIUM.exists():
        require_or_skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, which Django's async-safety check
    # mistakes for async code; the tests' own ORM calls (and the database flush after each test)
    # are synchronous and safe. Allowed exactly while the loop exists.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@dataclass
class PageEvents:
    dialogs: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


# Counts the reads of streamed response bodies that brought data: an answer that arrives in
# several reads was streamed, not buffered and sent whole.
COUNT_STREAM_READS = """
window.__streamReads = 0;
const read = ReadableStreamDefaultReader.prototype.read;
ReadableStreamDefaultReader.prototype.read = async function () {
  const result = await read.call(this);
  if (!result.done) window.__streamReads += 1;
  return result;
};
"""


def open_page(browser, base_url: str):
    """A fresh desktop-sized page; `page.events` collects dialogs (dismissed) and console errors."""
    context = browser.new_context(viewport=DESKTOP, base_url=base_url)
    context.set_default_timeout(20_000)
    context.add_init_script(COUNT_STREAM_READS)
    page = context.new_page()
    events = PageEvents()

    def on_dialog(dialog):
        events.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on(
        "console",
        lambda message: (
            events.console_errors.append(message.text) if message.type == "error" else None
        ),
    )
    page.events = events
    return page


@pytest.fixture
def page(browser, live_server) -> Iterator:
    """A page on pytest-django's live server (threaded WSGI)."""
    page = open_page(browser, live_server.url)
    yield page
    page.context.close()


@pytest.fixture
def asgi_server(transactional_db, tmp_path, task_queue) -> Iterator[str]:
    """The production server: uvicorn serving ragsite.asgi against the test database."""
    from django.conf import settings

    from tests.conftest import database_url, stop_worker

    log = tmp_path / "uvicorn.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "RAG_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "RAG_LLM_BASE_URL": "",
        "RAG_EGRESS_GUARD": "1",
    }
    if task_queue is not None:  # what the server queues goes to this test's folder, not var/broker
        env |= {
            "CELERY_BROKER_URL": "filesystem://",
            "RAG_BROKER_DIR": str(task_queue.folder),
            "RAG_CELERY_QUEUE": task_queue.queue,
        }
    process, url = serve_asgi(env, log)
    yield url
    stop_worker(process)
    assert "SynchronousOnlyOperation" not in log.read_text(), log.read_text()[-3000:]


def serve_asgi(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """uvicorn serving ragsite.asgi with `env`, on a socket this process bound and listens on
    and hands over (--fd): no other program can take the port between choosing and serving it,
    so the tests never talk to someone else's server. Returns the process and its URL once it
    answers HTTP."""
    from tests.conftest import ROOT, stop_worker

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    with listener:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "ragsite.asgi:application",
                "--fd",
                str(listener.fileno()),
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=[listener.fileno()],
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        # The socket listens from the start, so a connection proves nothing: wait for an answer.
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as probe:
                probe.sendall(
                    b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                if probe.recv(16).startswith(b"HTTP/"):
                    return process, url
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_worker(process)
            raise AssertionError(f"uvicorn did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def sign_in(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


def sign_out(page) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/accounts/login/")


def screenshot(page, name: str, full_page: bool = False) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def horizontal_overflow(page) -> int:
    """How many pixels the page is wider than the window (0: no sideways scrolling)."""
    return page.evaluate("Math.max(0, document.documentElement.scrollWidth - window.innerWidth)")


UNLABELLED_FIELDS_JS = """
() => Array.from(document.querySelectorAll('input, textarea, select'))
  .filter(el => el.type !== 'hidden')
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby'))
  .map(el => el.outerHTML)
"""


def unlabelled_fields(page) -> list[str]:
    return page.evaluate(UNLABELLED_FIELDS_JS)
