"""pytest plugin: outbound network refused for the whole suite, except loopback.

Loaded with `-p tests.egress_guard` (pyproject addopts) so it is in place before Django, Celery or
any model library is imported. Every process of the session (this one and the children tests start:
Celery worker, web server, manage.py) appends each refusal to one shared log. The log is read after
every phase of every test (setup, call, teardown), so a refusal fails the phase that caused it, even
where a library swallowed the error; lines written between tests fail the next test, named as such;
and at the end of the session the whole log is checked again: a refusal that no test reported or
expected fails the run. The log is kept when that happens.

`@pytest.mark.egress_refusal_expected("192.0.2.1", ...)` lets a test provoke refusals on purpose:
only refusals whose text contains one of the given strings are silenced, and each string must match
at least one refusal (a marker that silences nothing is stale).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from core import egress

egress.install()
# Child processes started by the tests (Celery worker, web server, manage.py) install it too:
# ragsite/offline.py reads RAG_EGRESS_GUARD, and they append their refusals to this shared log.
os.environ["RAG_EGRESS_GUARD"] = "1"
_fd, _log_name = tempfile.mkstemp(prefix="rag-egress-", suffix=".log")
os.close(_fd)
CHILD_LOG = Path(_log_name)
os.environ[egress.LOG_ENV] = str(CHILD_LOG)

MARKER = "egress_refusal_expected"


def child_violations() -> list[str]:
    """Refusals logged by any process of this session, this one included."""
    try:
        return CHILD_LOG.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


class _Ledger:
    """Every log line, read once in order, ends up as expected, reported (a test failed for it) or
    pending (not yet blamed on anything: reported at session end)."""

    def __init__(self) -> None:
        self.offset = 0  # bytes of the log read so far (whole lines only)
        self.lines_read = 0
        self.expected: list[str] = []
        self.reported: list[str] = []
        self.pending: list[str] = []
        self.own_seen = 0  # how many of egress.violations (this process) have been accounted for

    def read_new(self) -> list[str]:
        """Whole lines appended to the log since the last read, plus refusals of this process that
        could not be logged (a test that unset the log variable)."""
        try:
            with CHILD_LOG.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            data = b""
        complete = data[: data.rfind(b"\n") + 1] if b"\n" in data else b""
        self.offset += len(complete)
        lines = complete.decode("utf-8", "replace").splitlines()
        self.lines_read += len(lines)
        own_logged = [line for line in lines if line.startswith(f"{os.getpid()} ")]
        own_new = egress.violations[self.own_seen :]
        self.own_seen = len(egress.violations)
        logged_messages = [line.split(" ", 1)[1] for line in own_logged]
        for message in own_new:
            if message in logged_messages:
                logged_messages.remove(message)
            else:
                lines.append(f"{os.getpid()} {message} (not in the shared log)")
        return lines


_ledger = _Ledger()


def _expected_patterns(item: pytest.Item) -> list[str] | None:
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    patterns = [str(arg) for arg in marker.args]
    if not patterns:
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.{MARKER} needs the host (or text) of each refusal it "
            'expects, e.g. @pytest.mark.egress_refusal_expected("192.0.2.1")'
        )
    return patterns


def _sort(item: pytest.Item, lines: list[str], patterns: list[str] | None) -> list[str]:
    """Record the expected lines; return the others."""
    unexpected = []
    for line in lines:
        if patterns is not None and any(pattern in line for pattern in patterns):
            _ledger.expected.append(line)
            item.stash.setdefault(_matched_key, set()).update(p for p in patterns if p in line)
        else:
            unexpected.append(line)
    return unexpected


_matched_key = pytest.StashKey[set]()
_failed_key = pytest.StashKey[bool]()
_previous: list[str] = ["(session start)"]


def _phase(item: pytest.Item, when: str):
    # Lines logged since the last check and before this phase began: a child of an earlier test
    # (a worker, a server) wrote them in between. Blamed by name, never silenced by this test.
    between = _ledger.read_new()
    after = _previous[0]
    try:
        result = yield
    except BaseException:
        # The phase failed by itself: keep its refusals for the end-of-session check.
        item.stash[_failed_key] = True
        _ledger.pending.extend(between + _sort(item, _ledger.read_new(), _expected_patterns(item)))
        raise
    finally:
        if when == "teardown":
            _previous[0] = item.nodeid
    problems = []
    if between:
        problems.append(
            f"refused between tests (after {after}, before {item.nodeid} {when}): "
            + "; ".join(between)
        )
    unexpected = _sort(item, _ledger.read_new(), _expected_patterns(item))
    if unexpected:
        problems.append(f"refused during {when}: " + "; ".join(unexpected))
    if when == "teardown" and not item.stash.get(_failed_key, False):
        matched = item.stash.get(_matched_key, set())
        stale = [p for p in _expected_patterns(item) or [] if p not in matched]
        if stale:
            problems.append(f"{MARKER} expected refusals matching {stale}, none happened")
    if problems:
        _ledger.reported.extend(between + unexpected)
        pytest.fail("egress guard: " + " | ".join(problems), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _phase(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _phase(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    return (yield from _phase(item, "teardown"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*texts): the test provokes egress refusals containing these texts and checks "
        "them; only those are silenced",
    )


def pytest_report_header(config) -> str:
    if os.environ.get("RAG_NETNS") == "loopback-only":
        return "egress: Python socket guard on; outer guard on (loopback-only network namespace)"
    return (
        "egress: Python socket guard on; OUTER GUARD OFF: not run through tests/netns_run.sh "
        "(make test), so native code is not confined to loopback"
    )


def unaccounted_refusals() -> list[str]:
    """Read the rest of the log; every refusal that no test reported or expected."""
    _ledger.pending.extend(_ledger.read_new())
    whole = child_violations()
    problems = list(_ledger.pending)
    if len(whole) != _ledger.lines_read:  # the log was truncated or rewritten under us
        problems.append(f"the egress log has {len(whole)} lines, {_ledger.lines_read} were checked")
    return problems


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    problems = unaccounted_refusals()
    if not problems:
        return
    _ledger.reported.extend(problems)
    _ledger.pending.clear()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = (
        f"EGRESS GUARD: {len(problems)} refusal(s) no test answered for (log kept: {CHILD_LOG}):\n"
        + "\n".join(f"  {line}" for line in problems)
    )
    if reporter is not None:
        reporter.write_sep("=", "egress guard", red=True, bold=True)
        reporter.write_line(message)
    else:
        print(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config):
    # Kept when something was refused outside any test, so it can be read after the run.
    if not _ledger.pending and len(_ledger.reported) == 0:
        CHILD_LOG.unlink(missing_ok=True)
