"""pytest plugin: outbound network refused for the whole suite, except loopback.

Loaded with `-p tests.egress_guard` (pyproject addopts) so it is in place before Django, Celery or
any model library is imported. A refused connection fails the test that caused it, even where a
library swallowed the error, and even when it happened in a child process the test started.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from ragsite import egress

egress.install()
# Child processes started by the tests (Celery worker, web server, manage.py) install it too:
# ragsite/offline.py reads RAG_EGRESS_GUARD, and they append their refusals to this shared log.
os.environ["RAG_EGRESS_GUARD"] = "1"
_fd, _log_name = tempfile.mkstemp(prefix="rag-egress-", suffix=".log")
os.close(_fd)
CHILD_LOG = Path(_log_name)
os.environ[egress.LOG_ENV] = str(CHILD_LOG)


def child_violations() -> list[str]:
    """Refusals logged by any process of this session, this one included."""
    try:
        return CHILD_LOG.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    before = len(egress.violations)
    logged_before = len(child_violations())
    yield
    new = egress.violations[before:]
    others = [
        line
        for line in child_violations()[logged_before:]
        if not line.startswith(f"{os.getpid()} ")  # this process's are in `new` already
    ]
    # A test that provokes refusals on purpose marks itself so; it asserts them itself.
    if item.get_closest_marker("egress_refusal_expected"):
        return
    if new or others:
        pytest.fail("egress guard: " + "; ".join(new + others), pytrace=False)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "egress_refusal_expected: the test provokes egress refusals and checks them"
    )


def pytest_unconfigure(config):
    CHILD_LOG.unlink(missing_ok=True)
