"""Skips that would hide the point: a missing browser, Redis or development set skips a test on a
developer's machine, but under CI=true fails it, so a green CI build has run every test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import require_or_skip, required

TESTS = Path(__file__).resolve().parent


def test_a_missing_requirement_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)

    with pytest.raises(pytest.skip.Exception, match="no Redis"):
        require_or_skip("no Redis")


@pytest.mark.parametrize("value", ["true", "TRUE", "1"])
def test_a_missing_requirement_fails_under_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)

    with pytest.raises(pytest.fail.Exception, match="CI=true.*no Redis"):
        require_or_skip("no Redis")


def test_the_mark_form_names_what_is_missing_and_is_inert_when_present():
    assert required(False, "no browser").mark.name == "missing_requirement"
    assert required(False, "no browser").mark.args == ("no browser",)
    present = required(True, "no browser").mark
    assert (present.name, present.args) == ("skipif", (False,))


def test_no_test_skips_by_itself():
    """Every skip in the suite goes through require_or_skip/required, so CI cannot skip silently."""
    offenders = []
    pattern = re.compile(r"pytest\.skip\(|mark\.skip\b|mark\.skipif\(|importorskip\(")
    for path in TESTS.rglob("*.py"):
        if path.name in {"conftest.py", Path(__file__).name} and path.parent == TESTS:
            continue  # the helper itself, and this test's pattern
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(TESTS)}:{number}: {line.strip()}")
    assert offenders == []
