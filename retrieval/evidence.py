"""Evidence step: does what the reader may search even mention what the question is about?

A question naming something specific ("YAML", "DataFrame", "pydantic") that occurs in none of the
passages the asker may read cannot be answered from them, however similar the nearest passage
looks: similarity between a question and a look-alike passage is high by construction. This check
uses the corpus the asker can read, so it holds for documents nobody tuned it on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db import connection

from ingestion import embedding
from ingestion.models import FTS_CONFIG

# Parser token types that are words (ts_debug aliases); parts of hyphenated words count too.
# Whole words only: parts of hyphenated words ("rwxr" of "-rwxr-xr-x") are patterns, not names.
_WORD_ALIASES = ("asciiword", "word", "numword")
MAX_TERMS = 24  # the question's words checked, at most: a bound on the statement's cost
_CAMEL = re.compile(r"[a-z][A-Z]|[A-Z]{2}")
# Words, hyphenated ones whole ("-rwxr-xr-x", "utf-8"): those are patterns, not names.
_NAME = re.compile(r"[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*")
MIN_CHARS_PER_PIECE = 3
# Markup pasted into a question (`<img src=x onerror=...>`) is not what it asks about.
_TAG = re.compile(r"<[^<>]{0,500}>")

_SQL = f"""
WITH words AS (
    SELECT DISTINCT ON (lexeme) token, lexeme
    FROM ts_debug('{FTS_CONFIG}', %(question)s) t, unnest(t.lexemes) AS lexeme
    WHERE t.alias = ANY(%(aliases)s) AND lexeme <> ''
    LIMIT %(max_terms)s
)
SELECT w.token, w.lexeme, EXISTS (
    SELECT 1 FROM ingestion_chunk c
    JOIN ingestion_document d ON d.id = c.document_id
    WHERE c.search_vector @@ (
        '''' || replace(replace(w.lexeme, chr(92), chr(92) || chr(92)), '''', '''''') || ''''
    )::tsquery
      AND d.status = 'ready' AND d.collection_id = ANY(%(collections)s)
) AS present
FROM words w
"""  # noqa: S608 - only module constants are formatted in; values are bound parameters


@dataclass(frozen=True)
class Evidence:
    # Specific words of the question (names, rare words) that no readable passage contains.
    missing: tuple[str, ...]

    @property
    def unknown_subject(self) -> bool:
        return bool(self.missing)


def is_specific(word: str) -> bool:
    """A word that names something rather than saying something: written as a name (CamelCase,
    ALLCAPS, digits, underscores) or not made of common English word pieces. The embedding
    model's vocabulary holds common words whole or as a root plus a suffix ("accent" + "ed"); a
    name it has never seen falls apart into short fragments ("p", "yd", "ant", "ic" for
    pydantic), fewer than MIN_CHARS_PER_PIECE characters each on average."""
    if len(word) < 3 or word.isdigit():
        return False
    if _CAMEL.search(word) or any(ch.isdigit() or ch == "_" for ch in word):
        return True
    pieces = embedding.count_tokens(word.lower())
    return pieces >= 2 and len(word) / pieces < MIN_CHARS_PER_PIECE


def subject(question: str) -> str:
    """The question without markup pasted into it: the words it asks about."""
    return _TAG.sub(" ", question)


def specific_words(text: str) -> list[str]:
    """The specific words of `text` (markup left out), in order, once each."""
    text = subject(text)
    words = (w for w in _NAME.findall(text) if "-" not in w and w[0].isalpha())
    return list(dict.fromkeys(w for w in words if is_specific(w)))


def assess(question: str, collection_ids: list[int]) -> Evidence:
    """Which specific words of `question` occur in no passage of `collection_ids`."""
    if not question.strip() or not collection_ids:
        return Evidence(())
    with connection.cursor() as cursor:
        cursor.execute(
            _SQL,
            {
                "question": subject(question),
                "aliases": list(_WORD_ALIASES),
                "max_terms": MAX_TERMS,
                "collections": list(collection_ids),
            },
        )
        rows = cursor.fetchall()
    missing = [token for token, _, present in rows if not present and is_specific(token)]
    return Evidence(tuple(dict.fromkeys(missing)))
