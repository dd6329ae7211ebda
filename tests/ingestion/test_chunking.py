"""Chunking keeps sections apart, stays within the model's budget, and overlaps neighbours."""

from __future__ import annotations

import itertools

from ingestion.chunking import chunk_document, embedding_text
from ingestion.parsing import Block, ParsedDocument


def words(text: str) -> int:
    return len(text.split())


def test_chunks_never_cross_a_heading():
    parsed = ParsedDocument(
        blocks=[
            Block("Guide", "heading", level=0),
            Block("Install", "heading", level=1),
            Block("Run the installer.", page=1),
            Block("Usage", "heading", level=1),
            Block("Open the app.", page=2),
        ],
        title="Guide",
    )
    chunks = chunk_document(parsed, words, max_tokens=50, overlap_tokens=5, model_max_tokens=256)

    assert [(c.heading, c.text, c.page_start) for c in chunks] == [
        ("Guide > Install", "Run the installer.", 1),
        ("Guide > Usage", "Open the app.", 2),
    ]


def test_long_sections_split_within_budget_with_overlap():
    sentences = [f"Sentence number {i} is here." for i in range(60)]
    parsed = ParsedDocument(blocks=[Block(" ".join(sentences), page=3)], title="T")
    chunks = chunk_document(parsed, words, max_tokens=40, overlap_tokens=10, model_max_tokens=256)

    assert len(chunks) > 5
    assert all(words(c.text) <= 40 for c in chunks)  # counted here, not by the chunk
    # consecutive chunks share their boundary sentence(s)
    for first, second in itertools.pairwise(chunks):
        assert first.text.splitlines()[-1] in second.text
    joined = " ".join(c.text for c in chunks)
    assert all(s in joined for s in sentences)


def test_budget_leaves_room_for_title_and_heading_prefix():
    parsed = ParsedDocument(
        blocks=[Block("Head " * 30, "heading"), Block("word " * 400)], title="A long title " * 5
    )
    chunks = chunk_document(parsed, words, max_tokens=200, overlap_tokens=0, model_max_tokens=120)

    for chunk in chunks:
        assert words(embedding_text(parsed.title, chunk.heading, chunk.text)) <= 120


def test_list_items_are_marked():
    parsed = ParsedDocument(blocks=[Block("first", "list"), Block("second", "list")])
    chunks = chunk_document(parsed, words, max_tokens=50, overlap_tokens=0, model_max_tokens=256)

    assert chunks[0].text == "- first\n- second"


def test_embedding_text_puts_title_and_heading_path_in_front_saying_the_title_once():
    assert embedding_text("Guide", "Install > Linux", "Run it.") == (
        "Guide > Install > Linux\nRun it."
    )
    # The page's first heading is usually its title: not repeated.
    assert embedding_text("Guide", "Guide > Install", "Run it.") == "Guide > Install\nRun it."
    assert embedding_text("Guide", "Guide", "Run it.") == "Guide\nRun it."
    assert embedding_text("", "", "Run it.") == "Run it."
