"""Marks each test by what it needs, from the fixtures it uses, so `make test-fast` can leave out
the slow kinds (`-m "not e2e and not worker"`) without every test module having to remember to.

Loaded with `-p tests._markers` (pyproject's pytest addopts): before conftest files are read, and
its hook runs first, so tests/e2e/conftest.py already sees the `e2e` marks it adds.
"""

from __future__ import annotations

import pytest

# Fixtures that start a browser (Playwright + chromium); `page` and the like depend on `browser`.
BROWSER_FIXTURES = frozenset({"browser"})
# Fixtures that start a real Celery worker process, or give the queue one consumes.
WORKER_FIXTURES = frozenset({"worker", "celery_queue"})


def marks_for(fixturenames: list[str] | tuple[str, ...]) -> list[str]:
    """The marker names a test with these fixtures (its whole closure) gets."""
    names = set(fixturenames)
    marks = []
    if names & BROWSER_FIXTURES:
        marks.append("e2e")
    if names & WORKER_FIXTURES:
        marks.append("worker")
    return marks


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in marks_for(getattr(item, "fixturenames", ())):
            if item.get_closest_marker(name) is None:
                item.add_marker(name)
