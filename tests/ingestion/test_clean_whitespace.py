"""Whitespace is normalised at parsing and no chunk can grow past its character cap.

Runs of Unicode spaces or zero-width characters count as 0 word pieces: left in the text, one
chunk could hold hundreds of thousands of them and every regex that later reads it pays.
"""

from __future__ import annotations

from pathlib import Path

from django.test import override_settings

from ingestion.chunking import chunk_document
from ingestion.parsing import TEXT, Block, ParsedDocument, normalize_text, parse

SPACES = "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
SPACES += "\u202f\u205f\u3000\t\x0b\x0c"
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad"


def test_every_unicode_space_becomes_one_plain_space_and_newlines_stay():
    text = f"alpha{SPACES}beta{SPACES * 1000}gamma\n\n\ndelta{INVISIBLE}epsilon\x00zeta"

    assert normalize_text(text) == "alpha beta gamma\ndelta epsilon zeta"


def test_zero_width_characters_inside_a_word_do_not_split_it():
    # A soft hyphen or word joiner marks where a word may break or must not: it is not a space.
    assert normalize_text("infor\u00admation non\u2060breaking") == "information nonbreaking"


def test_a_text_file_full_of_unicode_spaces_parses_to_plain_words(tmp_path: Path):
    note = tmp_path / "spaces.txt"
    note.write_text(
        "Budget" + "\u2003" * 50000 + "note\u3000\u3000for 2027.\n\nSecond\u200b\u200bparagraph.",
        encoding="utf-8",
    )

    parsed = parse(note, TEXT)

    assert [b.text for b in parsed.blocks] == ["Budget note for 2027.", "Second paragraph."]


def zero_pieces(text: str) -> int:
    """A tokenizer that sees nothing: the worst case the character cap exists for."""
    return 0


@override_settings(RAG_CHUNK_MAX_CHARS=1000)
def test_a_chunk_never_exceeds_the_character_cap_even_at_zero_tokens():
    parsed = ParsedDocument(blocks=[Block("word " * 40000), Block("x" * 200_000)], title="T")

    chunks = chunk_document(
        parsed, zero_pieces, max_tokens=128, overlap_tokens=0, model_max_tokens=256
    )

    assert chunks
    assert max(len(c.text) for c in chunks) <= 1000
    assert sum(c.text.count("x") for c in chunks) == 200_000  # cut, not lost


def test_the_character_cap_has_a_sane_default():
    from django.conf import settings

    assert 1000 <= settings.RAG_CHUNK_MAX_CHARS <= 10_000
