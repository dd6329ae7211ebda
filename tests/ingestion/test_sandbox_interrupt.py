"""A parse interrupted while waiting for the helper (a task's soft time limit arrives as an
exception) stops the helper, so its late reply is never taken for the next file's."""

from __future__ import annotations

import signal

import pytest

from ingestion import sandbox
from ingestion.parsing import MARKDOWN, TEXT


class Interrupted(Exception):
    pass


def test_an_interrupted_parse_does_not_leak_its_reply_into_the_next(tmp_path):
    slow = tmp_path / "slow.txt"
    slow.write_text("\n\n".join(f"Paragraph {i} says something long enough." for i in range(60000)))
    quick = tmp_path / "quick.md"
    quick.write_text("# Quick\n\nThe quick file's own sentence.\n")

    def interrupt(signum, frame):
        raise Interrupted

    # The helper is up (started by an earlier parse), so the interruption lands in the wait.
    sandbox.parse_isolated(quick, MARKDOWN, memory_mb=1024, timeout_s=120)

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(Interrupted):
            sandbox.parse_isolated(slow, TEXT, memory_mb=1024, timeout_s=120)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    parsed = sandbox.parse_isolated(quick, MARKDOWN, memory_mb=1024, timeout_s=120)

    assert "The quick file's own sentence." in [block.text for block in parsed.blocks]
