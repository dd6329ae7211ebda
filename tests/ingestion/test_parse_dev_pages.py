"""Real documentation pages (the development set's Sphinx pages): no navigation comes out, and
all of their code blocks, definition lists and tables do.

What is navigation and what is content is read from each page's own markup here, independently
of the parser's rules: the navigation landmarks and the bars of rel/accesskey links on one side,
the <pre>, <dl> and <table> elements of the declared main content on the other.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingestion.parsing import HTML, parse
from tests.conftest import SHARED_EVAL, require_or_skip

CORPUS = SHARED_EVAL / "corpus"
# A module page, a chapter page (mostly a table of contents), pages with big tables, link tables
# and footnotes.
PAGES = ["bisect.html", "datatypes.html", "codecs.html", "pathlib.html", "datetime.html"]
_WORDS = re.compile(r"\w+")


def words(text: str) -> set[str]:
    return set(_WORDS.findall(text.casefold()))


def element_text(element) -> str:
    return " ".join(" ".join(element.itertext()).split()).replace("\u00b6", "")


@pytest.fixture(scope="module")
def corpus() -> Path:
    if not CORPUS.is_dir():
        require_or_skip(f"the development set is not at {CORPUS}")
    return CORPUS


@pytest.mark.parametrize("name", PAGES)
def test_no_navigation_and_every_code_block_list_and_table_of_the_content(corpus, name):
    import lxml.html

    path = corpus / name
    tree = lxml.html.fromstring(path.read_bytes())
    parsed = parse(path, HTML)
    text = "\n".join(b.text for b in parsed.blocks)

    navigation = tree.xpath(
        "//*[@role='navigation'] | //nav | //*[a[@accesskey]] | //*[@role='search']"
    )
    assert navigation, "the page should have navigation to leave out"
    for bar in navigation:
        bar_text = element_text(bar)
        if len(bar_text) >= 20:
            assert bar_text not in " ".join(text.split()), bar_text[:80]
    assert not re.search(r"\bnext\s*\|\s*previous\b|\bprevious\s*\|", text, re.IGNORECASE)

    main = tree.xpath("//*[@role='main'] | //main")[0]
    content = main.xpath(".//pre | .//dl | .//table")
    missing = {
        element.tag: sorted(words(element_text(element)) - words(text))[:10]
        for element in content
        if words(element_text(element)) - words(text)
    }
    assert not missing


def test_a_chapter_page_keeps_its_introduction_and_drops_its_table_of_contents(corpus):
    parsed = parse(corpus / "datatypes.html", HTML)
    text = "\n".join(b.text for b in parsed.blocks)

    assert parsed.title == "Data Types"
    assert "specialized data types such as dates and times" in text
    assert "Aware and Naive Objects" not in text  # an entry of the chapter's table of contents
