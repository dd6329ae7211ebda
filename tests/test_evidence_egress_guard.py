"""The no-egress plugin (tests/egress_guard.py) itself: a refusal fails the test whichever phase
caused it (setup, call, teardown), a refusal logged by a child between two tests fails the next test
by name, a refusal after the last test fails the session and keeps the log, and "refusal expected"
silences only the refusals it names.

Each check runs a small pytest session in a subprocess with the plugin loaded; every refused
address is a documentation address (192.0.2.0/24) refused by the guard before anything is sent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = '''
import socket, subprocess, sys
import pytest

def refuse(host):
    """What a library that swallows errors does: try, fail, carry on."""
    try:
        socket.create_connection((host, 80), timeout=1)
    except OSError:
        pass

@pytest.fixture
def refuses_in_setup():
    refuse("192.0.2.11")
    yield

@pytest.fixture
def refuses_in_teardown():
    yield
    refuse("192.0.2.12")

def pytest_runtest_logfinish(nodeid, location):
    # A child process of an earlier test (a worker, a server) that refuses between two tests.
    if nodeid.endswith("test_after_which_a_child_refuses"):
        code = "import ragsite, socket\\ntry: socket.create_connection(('192.0.2.13', 80), 1)\\nexcept OSError: pass"
        subprocess.run([sys.executable, "-c", code], check=True)

@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    if session.config.getoption("--refuse-at-end", False):
        refuse("192.0.2.14")

def pytest_addoption(parser):
    parser.addoption("--refuse-at-end", action="store_true")
'''

TESTS = """
import pytest
from conftest import refuse

def test_setup(refuses_in_setup):
    pass

def test_teardown(refuses_in_teardown):
    pass

def test_call():
    refuse("192.0.2.15")

def test_after_which_a_child_refuses():
    pass

def test_next_one():
    pass

@pytest.mark.egress_refusal_expected("192.0.2.16")
def test_expected_only():
    refuse("192.0.2.16")

@pytest.mark.egress_refusal_expected("192.0.2.16")
def test_expected_and_another():
    refuse("192.0.2.16")
    refuse("192.0.2.17")

@pytest.mark.egress_refusal_expected("192.0.2.16")
def test_expected_but_nothing_refused():
    pass

def test_clean():
    pass
"""


def run_session(tmp_path: Path, *args: str, tests: str = TESTS) -> tuple[int, str, dict]:
    """Run the inner session; return its exit code, its output and each test's failed phases."""
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_inner.py").write_text(tests)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    report = tmp_path / "report.xml"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.egress_guard",
            "-p",
            "no:django",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={report}",
            "--rootdir",
            str(tmp_path),
            *args,
            "test_inner.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    outcomes: dict[str, list[str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 (our own report)
        problems = outcomes.setdefault(case.get("name"), [])
        for element in case:
            if element.tag in {"failure", "error"}:
                problems.append(element.get("message", ""))
    return result.returncode, result.stdout + result.stderr, outcomes


def test_a_refusal_fails_the_phase_that_caused_it_and_only_named_refusals_are_expected(tmp_path):
    code, output, outcomes = run_session(tmp_path)

    assert code == 1, output
    assert any("192.0.2.11" in m and "setup" in m for m in outcomes["test_setup"]), outcomes
    assert any("192.0.2.12" in m and "teardown" in m for m in outcomes["test_teardown"]), outcomes
    assert any("192.0.2.15" in m for m in outcomes["test_call"]), outcomes
    # The child's line, written after one test and before the next, is blamed on neither silently.
    assert outcomes["test_after_which_a_child_refuses"] == []
    (between,) = outcomes["test_next_one"]
    assert "192.0.2.13" in between
    assert "between tests" in between
    assert "test_after_which_a_child_refuses" in between
    # The marker silences what it names, nothing else, and a marker that silenced nothing is stale.
    assert outcomes["test_expected_only"] == []
    (other,) = outcomes["test_expected_and_another"]
    assert "192.0.2.17" in other
    assert "192.0.2.16" not in other.split("during")[-1]
    (stale,) = outcomes["test_expected_but_nothing_refused"]
    assert "none happened" in stale
    assert outcomes["test_clean"] == []


def test_a_refusal_after_the_last_test_fails_the_session_and_the_log_is_kept(tmp_path):
    clean = textwrap.dedent(
        """
        def test_clean():
            pass
        """
    )

    code, output, outcomes = run_session(tmp_path, "--refuse-at-end", tests=clean)

    assert outcomes == {"test_clean": []}
    assert code == 1, output
    assert "EGRESS GUARD" in output
    assert "192.0.2.14" in output
    kept = Path(output.split("log kept: ")[1].split(")")[0])
    assert "192.0.2.14" in kept.read_text()
    kept.unlink()


def test_a_clean_session_passes_and_removes_its_log(tmp_path):
    clean = "def test_clean():\n    pass\n"

    code, output, outcomes = run_session(tmp_path, tests=clean)

    assert (code, outcomes) == (0, {"test_clean": []}), output
    assert "EGRESS GUARD" not in output
