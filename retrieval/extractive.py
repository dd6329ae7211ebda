"""The extractive answerer: the CPU default generator. It quotes sentences of the passages it
was given, each followed by its [n] marker, so citations follow the same path as a model's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import numpy as np

from ingestion.chunking import HEADING_SEPARATOR
from retrieval import prompts
from retrieval.search import Passage

NOTHING_EXTRACTED = "The documents found do not state a clear answer to this question."
MAX_SENTENCES = 3
_STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just me more
    most my no nor not of off on once only or other our out over own same she should so some such
    than that the their them then there these they this those through to too under until up very
    was we were what when where which while who whom why will with would you your yours one ones
    get make made use using used way want need tell show give find please know""".split()  # noqa: SIM905 - a word list reads better as prose
)
_WORD = re.compile(r"[A-Za-z0-9_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'“(\[A-Z0-9])")


def content_words(text: str) -> list[str]:
    """Lower-cased words that carry meaning, identifiers split (copy.deepcopy → copy, deepcopy)."""
    words = []
    for word in _WORD.findall(text.lower()):
        for part in [word, *word.split("_")] if "_" in word else [word]:
            if part and part not in _STOPWORDS and len(part) > 1:
                words.append(part)
    return words


def _stem(word: str) -> str:
    # Crude, but enough to let "lists" meet "list" and "copying" meet "copy".
    for suffix in ("ing", "ies", "es", "s", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage. A short un-punctuated line followed by a "- description" line (a
    definition list: `copy.deepcopy(x)` / `- Return a deep copy of x.`) is kept as one unit."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    units: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if (
            following.startswith("- ")
            and not line.startswith("- ")
            and len(line) <= 120
            and not line.endswith((".", ":", "!", "?"))
        ):
            line = f"{line} — {following[2:]}"
            index += 1
        units.extend(_SENTENCE_END.split(line.removeprefix("- ")))
        index += 1
    return [unit.strip() for unit in units if 15 <= len(unit.strip()) <= 600]


class ExtractiveGenerator:
    """Quotes the 1-3 sentences of the given passages that best answer the question, each
    followed by its [n] marker. Runs on CPU with the embedding model already in the process."""

    name = "extractive"

    def stream(
        self, messages: list[dict], passages: Sequence[Passage], *, query: str = ""
    ) -> Iterator[str]:
        question = prompts.question_from(messages)
        chosen = self.select(query or question, passages, question)
        text = (
            " ".join(f"{sentence} [{number}]" for number, sentence in chosen)
            if chosen
            else NOTHING_EXTRACTED
        )
        # Small pieces, so the reader sees the same progressive stream as from a model.
        yield from re.findall(r"\S+\s*", text)

    def select(
        self, query: str, passages: Sequence[Passage], question: str = ""
    ) -> list[tuple[int, str]]:
        """(passage number, sentence) pairs, best first, at most MAX_SENTENCES. `query` is the
        standalone search query; `question` (as asked) weighs its own words a little more, so a
        follow-up's new words decide between sentences about the earlier topic."""
        from ingestion.embedding import embed_texts

        candidates = [
            (number, rank, sentence, _section(passage.heading))
            for rank, (number, passage) in enumerate(enumerate(passages, start=1))
            for sentence in split_sentences(passage.text)
        ]
        if not candidates or not query.strip():
            return []
        # A sentence is embedded with its section name: "Counter objects: A Counter is a ...".
        texts = [
            f"{section}: {sentence}" if section else sentence
            for *_, sentence, section in candidates
        ]
        vectors = embed_texts([query, *texts])
        semantic = vectors[1:] @ vectors[0]
        query_terms = _question_terms(query)
        asked_terms = _question_terms(question) if question else set()
        scores = []
        for (_, rank, sentence, _), similarity in zip(candidates, semantic, strict=True):
            # Meaning first, shared words second, a little trust in the search ranking, and
            # prose over code fragments and list introductions.
            scores.append(
                float(similarity)
                + 0.35 * _overlap(query_terms, sentence)
                + 0.25 * _overlap(asked_terms, sentence)
                + 0.05 / (1 + rank)
                - _fragment_penalty(sentence)
            )
        order = np.argsort(scores)[::-1]
        best = scores[order[0]]
        chosen: list[tuple[int, str]] = []
        seen: list[set[str]] = []
        for index in order:
            number, _, sentence, _ = candidates[index]
            if len(chosen) >= MAX_SENTENCES or scores[index] < best - 0.12:
                break
            words = set(content_words(sentence))
            if any(len(words & other) > 0.7 * max(1, len(words)) for other in seen):
                continue  # a near-duplicate (chunk overlap repeats sentences)
            chosen.append((number, sentence))
            seen.append(words)
        return chosen


def _section(heading: str) -> str:
    return heading.rsplit(HEADING_SEPARATOR.strip(), 1)[-1].strip()


def _fragment_penalty(sentence: str) -> float:
    """How much a unit looks like code or a lead-in rather than a sentence that answers."""
    penalty = 0.0
    if sentence.rstrip().endswith(":"):
        penalty += 0.15
    if sentence.lstrip().startswith((">>>", "...", "$ ", "#")) or " # " in sentence:
        penalty += 0.2
    if len(re.findall(r"\b[A-Za-z]{2,}\b", sentence)) < 5:
        penalty += 0.15
    return penalty


def _question_terms(question: str) -> set[str]:
    words = content_words(question)
    terms = {_stem(word) for word in words}
    # "deep copy" should meet "deepcopy": adjacent words joined count as a term too.
    terms |= {a + b for a, b in zip(words, words[1:], strict=False)}
    return terms


def _overlap(terms: set[str], sentence: str) -> float:
    if not terms:
        return 0.0
    words = {_stem(word) for word in content_words(sentence)}
    return len(terms & words) / len(terms)
