"""The parse helper's preload: what unstructured loads on first use (its spaCy sentence splitter,
langdetect's profiles) is loaded before the helper forks a child per document, so no child loads
it again; and a warm-up that fails does not stop the helper from starting."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT


def run_in_a_fresh_process(code: str) -> subprocess.CompletedProcess:
    # A fresh interpreter, as the helper is: this test process has parsed documents already.
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_preload_loads_the_sentence_splitter_and_language_profiles_before_any_document():
    done = run_in_a_fresh_process(
        """
        import ragsite.offline  # telemetry off first, as the helper does
        from ingestion import parsing
        from langdetect import detector_factory
        from unstructured.nlp import tokenize

        assert tokenize._get_nlp.cache_info().currsize == 0
        assert detector_factory._factory is None
        parsing.preload()
        print(tokenize._get_nlp.cache_info().currsize, detector_factory._factory is not None)
        """
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "True"]


def test_a_warm_up_that_fails_still_lets_preload_finish():
    done = run_in_a_fresh_process(
        """
        import ragsite.offline
        import unstructured.partition.html
        from ingestion import parsing

        def broken(*args, **kwargs):
            raise RuntimeError("no spaCy model here")

        unstructured.partition.html.partition_html = broken
        parsing.preload()
        print("preloaded")
        """
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "preloaded"
