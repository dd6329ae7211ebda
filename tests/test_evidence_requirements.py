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

    with pytest.raises(pytest.fail.Exception, match=r"CI=true.*no Redis"):
        require_or_skip("no Redis")


def test_the_mark_form_names_what_is_missing_and_is_inert_when_present():
    assert required(False, "no browser").mark.name == "missing_requirement"
    assert required(False, "no browser").mark.args == ("no browser",)
    present = required(True, "no browser").mark
    assert (present.name, present.args) == ("skipif", (False,))


# What a skip for something missing on this machine talks about.
REQUIREMENT_WORDS = re.compile(
    r"redis|chromium|browser|playwright|shared_eval|eval set|dev set|development set|"
    r"installed|available|importorskip",
    re.IGNORECASE,
)


def test_no_test_skips_for_a_missing_requirement_by_itself():
    """Every skip for a missing browser, Redis or development set goes through require_or_skip /
    required, so CI cannot skip them silently. (A skip for a case that does not apply, such as a
    parameter a test has no use for, is not one of these.)"""
    offenders = []
    pattern = re.compile(r"pytest\.skip\(|mark\.skip\b|mark\.skipif\(|importorskip\(")
    for path in TESTS.rglob("*.py"):
        if path.name in {"conftest.py", Path(__file__).name} and path.parent == TESTS:
            continue  # the helper itself, and this test's pattern
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            # The skip and the two lines after it: a reason is often on the next line.
            if pattern.search(line) and REQUIREMENT_WORDS.search(
                " ".join(lines[number - 1 : number + 2])
            ):
                offenders.append(f"{path.relative_to(TESTS)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_skip_check_recognises_the_skips_it_replaced():
    replaced = [
        '@pytest.mark.skipif(not redis_available(), reason="no Redis on 127.0.0.1:6379")',
        'pytest.skip(f"{CHROMIUM} is not installed")',
        '@pytest.mark.skipif(not (SHARED_EVAL / "corpus").is_dir(), reason="dev eval set not present")',
    ]
    assert all(REQUIREMENT_WORDS.search(line) for line in replaced)
    assert not REQUIREMENT_WORDS.search('pytest.skip("used anchored: the runs test covers it")')
