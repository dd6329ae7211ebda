"""Redaction for `redacted` collections: personal data in text bound for an external model is
replaced by stable placeholders ("<PERSON_1>"), and put back in the answer shown to the reader.

Microsoft Presidio finds the data: its pattern recognizers (e-mail addresses, phone numbers, IBANs,
cards, IP addresses...) and spaCy's en_core_web_sm, the model already shipped, for names.
presidio-anonymizer settles overlapping findings. Nothing is downloaded at run time: the spaCy
model must be installed (Presidio would otherwise fetch one), and the e-mail recognizer checks
domains against tldextract's bundled public-suffix snapshot instead of fetching the list.

What is not redacted, on purpose: places, dates, nationalities, and organisations unless written
like a person's name (_NAME_SHAPED). They carry the meaning of the documents this is for
(policies, manuals), and spaCy's small model over-finds them. Names are found by a statistical
model: recall is measured, not complete (tests/retrieval/test_redaction.py); a value found once is
replaced wherever it appears later on the same Redactor. Redact passage by passage (see MAX_CHARS),
and restore the answer with the same Redactor.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import regex

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine
    from presidio_anonymizer import AnonymizerEngine

# The shipped model (packaging/en_core_web_sm); Presidio's default, en_core_web_lg, is not here.
SPACY_MODEL = "en_core_web_sm"

# What is replaced: identifies a person or reaches them. Presidio's names for the entity types.
ENTITIES: tuple[str, ...] = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "IBAN_CODE",
    "CREDIT_CARD",
    "IP_ADDRESS",
    "MAC_ADDRESS",
    "CRYPTO",
    "US_SSN",
    "US_ITIN",
    "US_PASSPORT",
    "US_BANK_NUMBER",
    "US_DRIVER_LICENSE",
    "UK_NHS",
    "MEDICAL_LICENSE",
)

# Presidio scores a phone number without context words 0.4 and a bare 8-17 digit number (a
# possible bank account) 0.05: at 0.35 phone numbers are always replaced, account and licence
# numbers only near words that say so ("account", "licence"), invoice numbers are left alone.
SCORE_THRESHOLD = 0.35

# Redact passage by passage: a chunk is at most RAG_CHUNK_MAX_CHARS (4,000), an API history 20,000.
# Ordinary text takes ~45 ms of CPU per 1,000 characters; crafted text (a run of numbers or
# e-mail-like words, each a finding) up to ~15 s at this bound, which is why it is not higher.
MAX_CHARS = 50_000

# spaCy's small model calls many people's names organisations ("Sophie Clarke" as ORG: seven in
# ten of the names it missed on the generated documents). An organisation written like a name, two
# to four capitalised words, is taken as a person's name: a firm's name redacted too costs little,
# a person's name sent out is what must not happen. All-caps words (EUR, IBAN, NATO) are not names.
_NAME_WORD = r"(?:\p{Lu}['\u2019])?\p{Lu}\p{Ll}+(?:\p{Lu}\p{Ll}+)?(?:-\p{Lu}\p{Ll}+)?"
_NAME_SHAPED = regex.compile(rf"{_NAME_WORD}(?: {_NAME_WORD}){{1,3}}")

# Values this short are not searched for again elsewhere in a text (see Redactor.redact).
_MIN_PROPAGATED_CHARS = 3


class RedactionUnavailable(RuntimeError):
    """The redaction engine cannot be loaded (the spaCy model is not installed): nothing may be
    sent that needed redacting."""


class TextTooLong(ValueError):
    """More than MAX_CHARS characters: refused rather than sent unredacted."""


@dataclass(frozen=True)
class _Engine:
    analyzer: AnalyzerEngine
    anonymizer: AnonymizerEngine
    # spaCy does not promise that one pipeline may run in several threads at once.
    lock: threading.Lock


_engine: _Engine | None = None
_engine_lock = threading.Lock()


def _get_engine() -> _Engine:
    """The process's Presidio engine, loaded on first use (a few seconds: the spaCy model)."""
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = _load()
    return _engine


def _load() -> _Engine:
    # Importing presidio_analyzer.nlp_engine probes for CUDA through torch (a tensor put on the
    # GPU where there is one) unless the device is named; its spaCy runs on the CPU here.
    os.environ["PRESIDIO_DEVICE"] = "cpu"
    # Its loader warns once for each recognizer of another language (Italian, Spanish, Polish).
    presidio_log = logging.getLogger("presidio-analyzer")
    level = presidio_log.level
    presidio_log.setLevel(logging.ERROR)
    try:
        return _build()
    finally:
        presidio_log.setLevel(level)


def _build() -> _Engine:
    import spacy
    import tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider, SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import EmailRecognizer, IbanRecognizer
    from presidio_anonymizer import AnonymizerEngine

    def require_model(model_name: str) -> None:
        if not spacy.util.is_package(model_name):
            raise RedactionUnavailable(
                f"the spaCy model {model_name!r} is not installed (pip install "
                "./packaging/en_core_web_sm); it is never downloaded at run time"
            )

    class ShippedSpacyEngine(SpacyNlpEngine):
        """Presidio's spaCy engine without its reaches outside (a model download when the package
        is missing, a CUDA probe through torch) and without the parser: Presidio reads tokens,
        lemmas and entities, the same without it, and parsing is a fifth of the time."""

        def load(self) -> None:
            loaded = {}
            for model in self.models:
                require_model(model["model_name"])
                loaded[model["lang_code"]] = spacy.load(model["model_name"], exclude=["parser"])
            self.nlp = loaded  # type: ignore[assignment]  # Presidio declares it None until loaded

    # No suffix-list URLs and no cache: the list bundled with tldextract, read from the package.
    offline_suffixes = tldextract.TLDExtract(
        suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True
    )

    class OfflineEmailRecognizer(EmailRecognizer):
        """Presidio's e-mail recognizer, whose domain check calls tldextract's module-level
        extractor: that one fetches the public-suffix list from the internet on first use."""

        def validate_result(self, pattern_text: str) -> bool:
            return offline_suffixes(pattern_text).fqdn != ""

    require_model(SPACY_MODEL)
    provider = NlpEngineProvider(
        nlp_engines=(ShippedSpacyEngine,),
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": SPACY_MODEL}],
        },
    )
    nlp_engine = provider.create_engine()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
    registry.remove_recognizer("EmailRecognizer")
    registry.add_recognizer(OfflineEmailRecognizer(name="OfflineEmailRecognizer"))
    online = [
        r
        for r in registry.recognizers
        if isinstance(r, EmailRecognizer) and not isinstance(r, OfflineEmailRecognizer)
    ]
    if online:  # a renamed recognizer in a later Presidio would reach the internet
        raise RedactionUnavailable(
            f"Presidio's own e-mail recognizer is still registered: {online}"
        )
    for recognizer in registry.recognizers:
        if isinstance(recognizer, IbanRecognizer):
            # Upper case only, as IBANs are written: the registry's IGNORECASE lets the pattern's
            # last group of four take the next word ("... 4048 from"), and the check digits of
            # the longer match then fail, so the IBAN was not found at all.
            recognizer.global_regex_flags = re.DOTALL | re.MULTILINE
    analyzer = AnalyzerEngine(
        registry=registry,
        nlp_engine=nlp_engine,
        supported_languages=["en"],
        default_score_threshold=SCORE_THRESHOLD,
    )
    offline_suffixes("warm.example.org")  # reads the snapshot now, not in the first request
    return _Engine(analyzer=analyzer, anonymizer=AnonymizerEngine(), lock=threading.Lock())


def _placeholder_pattern(entities: Sequence[str]) -> Any:
    """Placeholders as written and as a model may echo them: "<PERSON_1>", "< PERSON_1 >",
    "[PERSON_1]", markdown-escaped "\\<PERSON_1\\>", HTML-escaped "&lt;PERSON_1&gt;", or bare
    "PERSON_1", in any case. Each form needs its own two ends, so text around a placeholder we
    wrote ("\\" before "<PERSON_1>") never turns it into another form. Linear: alternatives
    of literals, bounded repeats."""
    names = "|".join(regex.escape(e) for e in sorted(entities, key=len, reverse=True))
    core = rf"(?P<type>{names})_(?P<number>[1-9][0-9]{{0,5}})"  # names repeat: `regex` allows it
    forms = (
        rf"<[ ]?{core}[ ]?>",
        rf"\\<{core}\\>",
        rf"&lt;{core}&gt;",
        rf"\[{core}\]",
        rf"(?<!\w){core}(?!\w)",
    )
    return regex.compile("|".join(forms), regex.IGNORECASE)


class Redactor:
    """Replaces personal data with placeholders and puts it back. One per answer (or per
    conversation): the same value always gets the same placeholder on one Redactor, different
    values different ones, so passages and follow-ups stay consistent for the model.
    Safe to share between threads."""

    def __init__(self, entities: Sequence[str] = ENTITIES):
        # The process's engine, loaded by the first Redactor (seconds): a missing model raises
        # RedactionUnavailable here, before anything is screened, not halfway through a prompt.
        self._engine = _get_engine()
        self.entities = tuple(e.upper() for e in entities)
        self._lock = threading.Lock()
        self._placeholders: dict[str, str] = {}  # original value → placeholder
        self._originals: dict[str, str] = {}  # placeholder → original value
        self._counts: dict[str, int] = {}
        self._pattern = _placeholder_pattern(self.entities)
        # The longest text a placeholder can be written as: what restore_stream may hold back.
        self._longest = len("&lt;&gt;") + max(len(e) for e in self.entities) + len("_999999")

    @property
    def mapping(self) -> dict[str, str]:
        """{placeholder: original value}, in the order the placeholders were given out."""
        with self._lock:
            return dict(self._originals)

    def redact(self, text: str) -> str:
        """`text` with every value found replaced by its placeholder.

        Text that already looks like a placeholder ("<PERSON_1>" in a document) is given one of
        its own, so that restoring never turns it into somebody's name. A value found anywhere
        on this Redactor is also replaced where the recognizers miss it (a name in a sentence
        spaCy reads differently)."""
        if len(text) > MAX_CHARS:
            raise TextTooLong(f"{len(text)} characters to redact, at most {MAX_CHARS}")
        if not text.strip():
            return text
        from presidio_anonymizer.entities import (
            ConflictResolutionStrategy,
            OperatorConfig,
            RecognizerResult,
        )

        engine = self._engine
        wanted = list(self.entities)
        if "PERSON" in self.entities:
            wanted.append("ORGANIZATION")  # see _NAME_SHAPED
        with engine.lock:
            found = engine.analyzer.analyze(text=text, language="en", entities=wanted)
        spans = []
        for r in found:
            kind = r.entity_type
            if kind == "ORGANIZATION" and _NAME_SHAPED.fullmatch(text, r.start, r.end):
                kind = "PERSON"
            if kind in self.entities:
                spans.append(RecognizerResult(kind, r.start, r.end, r.score))
        for match in self._pattern.finditer(text):
            kind = match.group("type").upper()
            spans.append(RecognizerResult(kind, match.start(), match.end(), 1.0))
        spans.extend(self._known_values(text, spans))
        if not spans:
            return text
        # "keep": the anonymizer only settles overlaps (one span wins, the union stays covered)
        # and joins neighbours of one type ("Ada" "Lovelace"); placeholders are given out below,
        # in reading order.
        settled = engine.anonymizer.anonymize(
            text=text,
            analyzer_results=spans,
            operators={"DEFAULT": OperatorConfig("keep")},
            conflict_resolution=ConflictResolutionStrategy.REMOVE_INTERSECTIONS,
        )
        pieces: list[str] = []
        position = 0
        with self._lock:
            for item in sorted(settled.items, key=lambda i: i.start):
                if item.start < position or item.start >= item.end:
                    continue  # cannot happen after REMOVE_INTERSECTIONS; never replace twice
                pieces.append(text[position : item.start])
                pieces.append(self._placeholder(text[item.start : item.end], item.entity_type))
                position = item.end
        pieces.append(text[position:])
        return "".join(pieces)

    def _known_values(self, text: str, spans: Sequence[Any]) -> list[Any]:
        """Spans for every other occurrence of a value found now or before on this Redactor."""
        from presidio_anonymizer.entities import RecognizerResult

        with self._lock:
            kinds = {value: self._type_of(p) for value, p in self._placeholders.items()}
        for span in spans:
            kinds.setdefault(text[span.start : span.end], span.entity_type)
        values = sorted(
            (v for v in kinds if len(v.strip()) >= _MIN_PROPAGATED_CHARS),
            key=len,
            reverse=True,
        )
        if not values:
            return []
        # Whole words only where the value starts or ends with one ("Ann" not in "Annual").
        alternatives = "|".join(
            (r"(?<!\w)" if v[0].isalnum() else "")
            + regex.escape(v)
            + (r"(?!\w)" if v[-1].isalnum() else "")
            for v in values
        )
        return [
            RecognizerResult(kinds[m.group()], m.start(), m.end(), 1.0)
            for m in regex.finditer(alternatives, text)
        ]

    @staticmethod
    def _type_of(placeholder: str) -> str:
        return placeholder[1:].rsplit("_", 1)[0]

    def _placeholder(self, value: str, kind: str) -> str:
        """The value's placeholder, given out on first sight (call with self._lock held)."""
        placeholder = self._placeholders.get(value)
        if placeholder is None:
            number = self._counts.get(kind, 0) + 1
            self._counts[kind] = number
            placeholder = f"<{kind}_{number}>"
            self._placeholders[value] = placeholder
            self._originals[placeholder] = value
        return placeholder

    def restore(self, text: str) -> str:
        """`text` (a model's answer) with the placeholders of this Redactor replaced by the
        values; a placeholder it never gave out is left as written."""
        return self._pattern.sub(self._original_of, text)

    def _original_of(self, match: Any) -> str:
        kind = match.group("type").upper()
        number = match.group("number")
        original = self._originals.get(f"<{kind}_{number}>")
        return match.group() if original is None else original

    def restore_stream(self, pieces: Iterable[str]) -> Iterator[str]:
        """restore() over streamed text: each piece is passed on restored as soon as it cannot be
        the start of a placeholder still arriving; only such a tail (a few characters, at most
        the longest written form) is held back until the next piece or the end."""
        context = ""  # the last character passed on: "aPERSON_1" is no placeholder
        pending = ""
        for piece in pieces:
            if not piece:
                yield piece  # empty pieces mean something to the caller (llm.THINKING)
                continue
            pending += piece
            text = context + pending
            cut = self._safe_cut(text, len(context))
            if cut > len(context):
                yield self._restore_from(text, len(context), cut)
                context, pending = text[cut - 1], text[cut:]
        if pending:
            text = context + pending
            yield self._restore_from(text, len(context), len(text))

    def _safe_cut(self, text: str, start: int) -> int:
        """Where text[start:] may be split: before any tail that could still grow into a
        placeholder, and never inside a complete one."""
        cut = len(text)
        for position in range(max(start, len(text) - self._longest), len(text)):
            match = self._pattern.fullmatch(text, pos=position, partial=True)
            if match is not None and (match.partial or not text.endswith((">", "]", ";"))):
                cut = position
                break
        for match in self._pattern.finditer(text, pos=start):
            if match.start() < cut < match.end():
                return match.start()
        return cut

    def _restore_from(self, text: str, start: int, end: int) -> str:
        """restore() of text[start:end], reading text[:start] for what precedes it."""
        out: list[str] = []
        position = start
        for match in self._pattern.finditer(text, pos=start, endpos=end):
            out.append(text[position : match.start()])
            out.append(self._original_of(match))
            position = match.end()
        out.append(text[position:end])
        return "".join(out)
