"""The extractive answerer: the CPU default generator. It quotes one readable excerpt of one
passage (the best sentence with the neighbours that complete it), followed by its [n] marker, so
citations follow the same path as a model's.

How an excerpt is chosen:
1. Every sentence of the passages is a candidate, scored by meaning (cosine of the sentence, with
   its section name, to the question), by the question's words it contains, by the search rank of
   its passage, and by its kind: a question asking for a value (how many, which default, what
   limit) prefers sentences stating one; code fragments and lead-ins ("as follows:") score less.
2. The best sentence grows into an excerpt with its neighbours in the same passage when they
   complete it: a lead-in takes what it introduces, a sentence opening with "It"/"This" takes the
   one before, a value question takes the "The default is ..." that follows a description.
3. A second excerpt, from another passage of the same document and cited separately, only when it
   holds question words that the first lacks and scores nearly as well. Never a collage of half
   sentences, never a second document's claim.
4. When the passages do not support an answer (nothing in them shares a specific word with the
   question and nothing is close in meaning), the answerer says so instead of quoting.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ingestion.chunking import HEADING_SEPARATOR
from retrieval import prompts
from retrieval.search import Passage

NOTHING_EXTRACTED = "The documents found do not state a clear answer to this question."
MAX_EXCERPT_UNITS = 4  # sentences (or list items) in one excerpt
# Sentences looked at: the passages the search ranked first hold the answer if any do, and every
# sentence costs an embedding (the bulk of an extractive answer's time).
MAX_PASSAGES = 8
MAX_CANDIDATES = 64
MAX_EXCERPT_CHARS = 700
# A second excerpt comes from the same document and must score within this of the first.
SAME_DOCUMENT_MARGIN = 0.25
# The best sentence must be at least this close in meaning to the question, or share a specific
# word with it: below it, the passages are about something else.
MIN_SENTENCE_SIMILARITY = 0.30
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
# A question that asks for a value: an amount, a default, a limit, a version, a type.
_VALUE_QUESTION = re.compile(
    r"\b(how (much|many|long|large|big|often|old)|default|maximum|minimum|max|min|limit|"
    r"version|timeout|size|number of|which (type|encoding|value|port|protocol|directive)|"
    r"what (type|encoding|value|port|protocol|version|error|exception))\b",
    re.IGNORECASE,
)
_VALUE_SENTENCE = re.compile(
    r"\d|\b(default|defaults|maximum|minimum|at most|at least|limit|None|True|False|"
    r"version|raises?|error|exception|bytes?|seconds?|characters?)\b",
    re.IGNORECASE,
)
# Sentences that lean on the one before them.
_LEANS_BACK = re.compile(
    r"^(it|its|this|these|those|they|such|the latter|the former|otherwise|however|also|"
    r"then|in that case|if so|for example|e\.g\.)\b",
    re.IGNORECASE,
)
# Sentences that complete the one before them with a value or a consequence.
_COMPLETES = re.compile(
    r"^(the default|by default|defaults? to|if .{0,60}(is|are) (not )?(given|specified|omitted|"
    r"zero|none)|otherwise|when .{0,60}(is|are) (not )?(given|specified|omitted|zero|none))",
    re.IGNORECASE,
)
_CELL_SEPARATOR = " | "


@dataclass(frozen=True)
class Excerpt:
    number: int  # the passage's [n]
    text: str
    score: float


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
    """Sentences of a passage, in order. A term line followed by its description (a definition
    list or an API reference: `secrets.token_urlsafe([nbytes])` / `Return a random URL-safe
    text string.`, or `copy.deepcopy(x)` / `- Return a deep copy of x.`) makes one unit of the
    term and the description's first sentence, so the answer names what it describes. A table
    row is one unit."""
    return _split(text)[0]


def _split(text: str) -> tuple[list[str], list[str]]:
    """`split_sentences`, and for each unit the term its description is about ("" if none):
    a later sentence or paragraph of a description is quoted with the name it is about. A term
    holds until the next term line of the passage."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    units: list[str] = []
    terms: list[str] = []
    term = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        joined = False
        if _is_term(line) and _is_description(following):
            # Only a name is carried to later sentences: "Note" or "Example" labels are not.
            term, joined = (line if _CODE_LIKE.search(line) else ""), True
            line = f"{line} — {following.removeprefix('- ')}"
            index += 1
        is_row = _CELL_SEPARATOR in line
        pieces = [line] if is_row else _SENTENCE_END.split(line.removeprefix("- "))
        for position, piece in enumerate(pieces):
            piece = piece.strip()
            if piece and len(piece) <= 1200:
                units.append(piece)
                terms.append("" if (joined and position == 0) or is_row else term)
        index += 1
    return units, terms


_CODE_LIKE = re.compile(r"[(._@]|[a-z][A-Z]")
_PARENTHESISED = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")


def _is_term(line: str) -> bool:
    """A line that names something rather than says something: an API signature
    (`tempfile.mkdtemp(suffix=None)`), a dotted name or a short label; not a sentence, list
    item, table row, code prompt, quoted string or "key: value" line."""
    if (
        len(line) > 120
        or line.endswith((".", ":", "!", "?", ","))
        or line.startswith(("- ", ">>>", "...", "$ ", "#", "'", '"', "“"))
        or _CELL_SEPARATOR in line
    ):
        return False
    bare = _PARENTHESISED.sub("", line)
    if ":" in bare:
        return False
    return ("(" in line and line.rstrip().endswith((")", "]"))) or len(bare.split()) <= 4


def _is_description(line: str) -> bool:
    """A line of prose that can describe the term above it."""
    body = line.removeprefix("- ")
    return (
        line.startswith("- ")
        or (bool(body) and body[0].isupper() and len(body.split()) >= 4 and not _is_term(body))
    ) and _CELL_SEPARATOR not in line


def is_value_question(question: str) -> bool:
    return bool(_VALUE_QUESTION.search(question))


class ExtractiveGenerator:
    """Quotes one excerpt (and at most one more, from another passage of the same document)
    that best answers the question, each followed by its [n] marker. Runs on CPU with the embedding model already
    loaded in the process."""

    name = "extractive"

    def stream(
        self, messages: list[dict], passages: Sequence[Passage], *, query: str = ""
    ) -> Iterator[str]:
        question = prompts.question_from(messages)
        excerpts = self.select(query or question, passages, question)
        text = (
            "\n\n".join(f"{excerpt.text} [{excerpt.number}]" for excerpt in excerpts)
            if excerpts
            else NOTHING_EXTRACTED
        )
        # Small pieces, so the reader sees the same progressive stream as from a model.
        yield from re.findall(r"\S+\s*", text)

    def select(self, query: str, passages: Sequence[Passage], question: str = "") -> list[Excerpt]:
        """The excerpts to quote, best first (empty when the passages do not support an
        answer). `query` is the standalone search query; `question` (as asked) weighs its own
        words a little more, so a follow-up's new words decide between sentences about the
        earlier topic."""
        from ingestion.embedding import embed_texts
        from retrieval.evidence import specific_words

        if not query.strip():
            return []
        passages = passages[:MAX_PASSAGES]
        split = [_split(passage.text) for passage in passages]
        units = [passage_units for passage_units, _ in split]
        terms = [passage_terms for _, passage_terms in split]
        # The question's names ("SIGINT", "argparse") must be in the passage quoted: a passage
        # about a look-alike shares the meaning but not the name.
        names = {_stem(w.lower()) for w in specific_words(query)}
        coverage = [
            len(names & _words(f"{p.document_title} {p.heading} {p.text}")) for p in passages
        ]
        if names and max(coverage, default=0) == 0:
            return []
        candidates = [
            (p_index, u_index)
            for p_index, passage_units in enumerate(units)
            for u_index, unit in enumerate(passage_units)
            if 15 <= len(unit) <= 600
        ][:MAX_CANDIDATES]
        # The first excerpt comes from a passage naming the most of the question's names.
        eligible = [coverage[p_index] == max(coverage) for p_index, _ in candidates]
        if not any(eligible):
            return []
        # A sentence is embedded with its section name: "Counter objects: A Counter is a ...".
        texts = []
        for p_index, u_index in candidates:
            section = _section(passages[p_index].heading)
            unit = _readable_row(units[p_index], u_index)
            texts.append(f"{section}: {unit}" if section else unit)
        vectors = embed_texts([query, *texts])
        semantic = vectors[1:] @ vectors[0]
        query_terms = _question_terms(query)
        asked_terms = _question_terms(question) if question else set()
        wants_value = is_value_question(question or query)
        scores = np.array(
            [
                self._score(
                    float(similarity),
                    units[p_index][u_index],
                    passages[p_index],
                    p_index,
                    query_terms,
                    asked_terms,
                    wants_value,
                )
                for (p_index, u_index), similarity in zip(candidates, semantic, strict=True)
            ]
        )
        order = np.argsort(-scores, kind="stable")
        best = next(int(index) for index in order if eligible[int(index)])
        p_index, u_index = candidates[best]
        best_passage = passages[p_index]
        context_words = _words(f"{best_passage.document_title} {best_passage.heading}")
        sentence_words = _words(units[p_index][u_index])
        if float(semantic[best]) < MIN_SENTENCE_SIMILARITY and not (
            query_terms & (sentence_words | context_words)
        ):
            return []
        first = Excerpt(
            p_index + 1,
            _grow(units[p_index], terms[p_index], u_index, wants_value),
            float(scores[best]),
        )
        chosen = [first]
        missing = query_terms - _words(first.text) - context_words
        if missing:
            for index in order:
                index = int(index)
                if scores[index] < scores[best] - SAME_DOCUMENT_MARGIN:
                    break
                other_passage, other_unit = candidates[index]
                if other_passage == p_index:
                    continue
                if passages[other_passage].document_id != best_passage.document_id:
                    continue  # another document is another claim: it would cost precision
                text = _grow(units[other_passage], terms[other_passage], other_unit, wants_value)
                if missing & _words(text):
                    chosen.append(Excerpt(other_passage + 1, text, float(scores[index])))
                    break
        return chosen

    @staticmethod
    def _score(
        similarity: float,
        sentence: str,
        passage: Passage,
        rank: int,
        query_terms: set[str],
        asked_terms: set[str],
        wants_value: bool,
    ) -> float:
        # Meaning first, shared words second, a little trust in the search ranking, a value
        # when one is asked for, and prose over code fragments and list introductions.
        score = (
            similarity
            + 0.35 * _overlap(query_terms, sentence)
            + 0.25 * _overlap(asked_terms, sentence)
            + 0.05 / (1 + rank)
            - _fragment_penalty(sentence)
        )
        if wants_value and _VALUE_SENTENCE.search(sentence):
            score += 0.1
        return score


def _grow(units: list[str], terms: list[str], index: int, wants_value: bool) -> str:
    """The unit at `index` with the neighbours that complete it, as one excerpt, led by the
    term it describes when the excerpt does not already name it."""
    start, end = index, index + 1  # units[start:end]

    def length() -> int:
        return sum(len(u) for u in units[start:end])

    # A sentence opening with "It"/"This" needs the one it points back to.
    if start > 0 and _LEANS_BACK.match(units[start]) and length() + len(units[start - 1]) < 600:
        start -= 1
    # A lead-in ("... as follows:") takes what it introduces.
    while (
        units[end - 1].rstrip().endswith(":")
        and end < len(units)
        and end - start < MAX_EXCERPT_UNITS
        and length() + len(units[end]) <= MAX_EXCERPT_CHARS
    ):
        end += 1
    # "The default is ..." after a description completes it; so does a value the question wants.
    if (
        end < len(units)
        and end - start < MAX_EXCERPT_UNITS
        and length() + len(units[end]) <= MAX_EXCERPT_CHARS
        and (
            _COMPLETES.match(units[end])
            or (
                wants_value
                and not _VALUE_SENTENCE.search(" ".join(units[start:end]))
                and _VALUE_SENTENCE.search(units[end])
            )
        )
    ):
        end += 1
    if _CELL_SEPARATOR in units[index] and end - start == 1:
        return _readable_row(units, index)
    text = " ".join(units[start:end])
    term = terms[start] if start < len(terms) else ""
    return f"{term} — … {text}" if term and term not in text else text


def _words(text: str) -> set[str]:
    return {_stem(word) for word in content_words(text)}


def _readable_row(units: list[str], index: int) -> str:
    """A table row as "header: value" pairs when the passage starts with the table's header row
    (tables are chunked with their header on top), else the unit as it is."""
    row = units[index]
    if _CELL_SEPARATOR not in row or index == 0:
        return row
    header = units[0]
    names = [cell.strip() for cell in header.split(_CELL_SEPARATOR.strip())]
    cells = [cell.strip() for cell in row.split(_CELL_SEPARATOR.strip())]
    if _CELL_SEPARATOR not in header or len(names) != len(cells):
        return row
    return "; ".join(
        f"{name}: {cell}" if name else cell for name, cell in zip(names, cells, strict=True)
    )


def _section(heading: str) -> str:
    return heading.rsplit(HEADING_SEPARATOR.strip(), 1)[-1].strip()


def _fragment_penalty(sentence: str) -> float:
    """How much a unit looks like code or a lead-in rather than a sentence that answers."""
    penalty = 0.0
    if sentence.rstrip().endswith(":"):
        penalty += 0.15
    if sentence.lstrip().startswith((">>>", "...", "$ ", "#")) or " # " in sentence:
        penalty += 0.2
    if len(re.findall(r"\b[A-Za-z]{2,}\b", sentence)) < 5 and _CELL_SEPARATOR not in sentence:
        penalty += 0.15
    return penalty


def _question_terms(question: str) -> set[str]:
    words = content_words(question)
    terms = {_stem(word) for word in words}
    # "deep copy" should meet "deepcopy": adjacent words joined count as a term too.
    terms |= {a + b for a, b in itertools.pairwise(words)}
    return terms


def _overlap(terms: set[str], sentence: str) -> float:
    if not terms:
        return 0.0
    words = {_stem(word) for word in content_words(sentence)}
    return len(terms & words) / len(terms)
