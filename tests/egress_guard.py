"""pytest plugin: outbound network refused for the whole suite, except loopback.

Loaded with `-p tests.egress_guard` (pyproject addopts) so it is in place before Django, Celery or
any model library is imported. A refused connection fails the test that caused it, even where a
library swallowed the error.
"""

from __future__ import annotations

import os

import pytest

from ragsite import egress

egress.install()
# Child processes started by the tests (Celery worker, web server) install it too.
os.environ["RAG_EGRESS_GUARD"] = "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    before = len(egress.violations)
    yield
    new = egress.violations[before:]
    if new:
        pytest.fail("egress guard: " + "; ".join(new), pytrace=False)
