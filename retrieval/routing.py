"""Routing step: which model endpoint answers, which passages (and earlier answers) it may
receive, redacted where the collection asks, and the disclosure ledger of what each call carried.

The rule itself is core.endpoints.may_receive. Passages an endpoint may not receive are dropped
from its prompt (never sent), the answer says so and names the models that could use them; when
nothing may go, nothing is sent and the answer says that instead. Nothing ever falls back to
another model on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from django.contrib.auth.models import User

from core import endpoints
from core.endpoints import ANSWER, REDACT, Endpoint
from ingestion.models import Collection
from retrieval.models import Citation, Disclosure
from retrieval.search import Passage

logger = logging.getLogger(__name__)


class UnknownModel(ValueError):
    """A model name nobody configured for answering, or one the question may not use; `str()`
    is fit to show a person (the API answers 400 with it)."""


# --- who answers ----------------------------------------------------------------------------------


def answer_choices() -> list[Endpoint]:
    """The endpoints a person may pick for an answer, in configuration order."""
    return endpoints.with_role(ANSWER)


def default_answer_endpoint() -> Endpoint:
    """The first in-house answer endpoint; without one, the in-process extractive answerer."""
    return endpoints.default_for(ANSWER) or Endpoint(
        name="extractive",
        base_urls=(),
        roles=frozenset({ANSWER}),
        label="Extractive answerer (in-house)",
    )


def answer_endpoint(model: str | None, collection_id: int | None) -> Endpoint:
    """The endpoint that answers: the one named by `model` (a person's choice), else the
    collection's default model, else the default. UnknownModel for a name that is not an answer
    endpoint. Configuration errors (EndpointConfigurationError) pass through."""
    choices = answer_choices()
    if model:
        chosen = next((e for e in choices if e.name == model), None)
        if chosen is None:
            names = ", ".join(e.name for e in choices) or "none"
            raise UnknownModel(
                f"No model named {model!r} answers questions here; choose one of: {names}."
            )
        return chosen
    if collection_id is not None:
        name = (
            Collection.objects.filter(pk=collection_id)
            .values_list("default_model", flat=True)
            .first()
        )
        if name:
            chosen = next((e for e in choices if e.name == name), None)
            if chosen is None:
                raise UnknownModel(
                    f"This collection's default model {name!r} is not configured; choose a model."
                )
            return chosen
    return default_answer_endpoint()


def rewrite_endpoint(answering: Endpoint) -> Endpoint | None:
    """Who rewrites a follow-up: the answering endpoint when it also rewrites, else the first
    in-house rewrite endpoint (None: the rule-based rewrite)."""
    if endpoints.REWRITE in answering.roles and not answering.in_process:
        return answering
    return endpoints.default_for(endpoints.REWRITE)


def in_house_answerers() -> list[Endpoint]:
    return [e for e in answer_choices() if not e.external] or [default_answer_endpoint()]


# --- what it may receive --------------------------------------------------------------------------


def sensitivities(collection_ids: Iterable[int]) -> dict[int, str]:
    """Current sensitivity of each collection; a collection that no longer exists is absent
    (callers treat absence as in-house only)."""
    ids = {cid for cid in collection_ids if cid is not None}
    if not ids:
        return {}
    return dict(Collection.objects.filter(pk__in=ids).values_list("pk", "sensitivity"))


def new_redactor() -> Any | None:
    """A Redactor (retrieval.redaction), or None when redaction is not available: then redacted
    collections stay in-house only (fail closed)."""
    try:
        from retrieval.redaction import Redactor
    except ImportError:
        return None
    try:
        return Redactor()
    except Exception:  # a missing language model must close the gate, not open it
        logger.exception("redaction unavailable; redacted collections stay in-house")
        return None


@dataclass
class Screened:
    """Passages screened for one endpoint: `sent` as the endpoint gets them (redacted copies
    where needed), `originals[i]` the passage `sent[i]` came from, `withheld` those not sent."""

    endpoint: Endpoint
    sent: list[Passage] = field(default_factory=list)
    originals: list[Passage] = field(default_factory=list)
    redacted: list[bool] = field(default_factory=list)
    withheld: list[Passage] = field(default_factory=list)
    sensitivity: dict[int, str] = field(default_factory=dict)
    redactor: Any | None = None
    seen: dict[str, str] = field(default_factory=dict)  # text -> its redacted form

    def subset(self, included: Sequence[Passage]) -> Screened:
        """The same screening limited to `included` (sent passages a prompt kept, in its
        order): what the call really carries."""
        index = {id(p): i for i, p in enumerate(self.sent)}
        chosen = [index[id(p)] for p in included]
        return Screened(
            self.endpoint,
            sent=[self.sent[i] for i in chosen],
            originals=[self.originals[i] for i in chosen],
            redacted=[self.redacted[i] for i in chosen],
            withheld=self.withheld,
            sensitivity=self.sensitivity,
            redactor=self.redactor,
        )


def screen(endpoint: Endpoint, passages: Sequence[Passage]) -> Screened:
    """Which of `passages` `endpoint` may receive, redacted where the rule says so."""
    known = sensitivities(p.collection_id for p in passages)
    result = Screened(endpoint, sensitivity=known)
    for passage in passages:
        verdict = endpoints.may_receive(
            endpoint, known.get(passage.collection_id, endpoints.SENSITIVITY_IN_HOUSE)
        )
        if verdict == REDACT:
            if result.redactor is None:
                result.redactor = new_redactor()
            if result.redactor is None:
                verdict = False
        if verdict is False:
            result.withheld.append(passage)
            continue
        if verdict == REDACT:
            passage_sent = replace(
                passage,
                text=_redacted(result, passage.text),
                document_title=_redacted(result, passage.document_title),
                heading=_redacted(result, passage.heading),
            )
            result.redacted.append(True)
        else:
            passage_sent = passage
            result.redacted.append(False)
        result.sent.append(passage_sent)
        result.originals.append(passage)
    return result


def _redacted(screened: Screened, text: str) -> str:
    """`text` redacted by the screening's redactor; titles and headings repeat across passages
    and are analysed once."""
    if not text.strip():
        return text
    if text not in screened.seen:
        assert screened.redactor is not None  # screen() made one before asking
        screened.seen[text] = screened.redactor.redact(text)
    return screened.seen[text]


@dataclass(frozen=True)
class Source:
    """A passage an earlier answer drew on (its citations and what its prompt carried)."""

    chunk_id: int | None
    document_id: int | None
    collection_id: int | None


def earlier_sources(message_ids: Sequence[int]) -> dict[int, set[Source]]:
    """For each earlier assistant message, the passages it drew on: its citations and the
    passages its answer call carried (ledger rows). An answer quotes them, so a later prompt
    that repeats the answer discloses them again."""
    sources: dict[int, set[Source]] = {pk: set() for pk in message_ids}
    if not message_ids:
        return sources
    for message_id, chunk_id, document_id, collection_id in Citation.objects.filter(
        message_id__in=message_ids
    ).values_list("message_id", "chunk_id", "document_id", "document__collection_id"):
        sources[message_id].add(Source(chunk_id, document_id, collection_id))
    for row in Disclosure.objects.filter(message_id__in=message_ids, role=ANSWER).values_list(
        "message_id", "chunk_id", "document_id", "collection_id"
    ):
        if row[0] is not None:
            sources[row[0]].add(Source(row[1], row[2], row[3]))
    return sources


@dataclass
class History:
    """Earlier turns screened for one endpoint: the (role, content) pairs it may receive, the
    sources the assistant turns among them carry, and how many turns were left out."""

    turns: list[tuple[str, str]] = field(default_factory=list)
    # per turn: (source, its collection's sensitivity, redacted) for each passage it drew on
    turn_sources: list[list[tuple[Source, str, bool]]] = field(default_factory=list)
    withheld: int = 0

    def sources(self, last: int | None = None) -> list[tuple[Source, str, bool]]:
        """The sources of the last `last` turns (all without it): what a prompt holding only
        those turns repeats."""
        chosen = self.turn_sources if last is None else self.turn_sources[-last:] if last else []
        return [item for turn in chosen for item in turn]


def screen_history(
    endpoint: Endpoint,
    turns: Sequence[tuple[str, str]],
    message_ids: Sequence[int | None],
    redactor: Any | None = None,
) -> tuple[History, Any | None]:
    """The turns `endpoint` may receive. The person's own questions always go; an earlier answer
    goes only if every passage it drew on may go to this endpoint (redacted when any of them is
    from a redacted collection). Returns the screened history and the redactor used, if any."""
    assistant_ids = [pk for pk in message_ids if pk is not None]
    sources = earlier_sources(assistant_ids)
    known = sensitivities(
        s.collection_id for found in sources.values() for s in found if s.collection_id is not None
    )
    history = History()
    for (role, content), message_id in zip(turns, message_ids, strict=True):
        if message_id is None:
            history.turns.append((role, content))
            history.turn_sources.append([])
            continue
        drew_on = sources.get(message_id, set())
        verdicts = {
            source: endpoints.may_receive(
                endpoint,
                known.get(source.collection_id or 0, endpoints.SENSITIVITY_IN_HOUSE),
            )
            for source in drew_on
        }
        if any(v is False for v in verdicts.values()):
            history.withheld += 1
            continue
        must_redact = any(v == REDACT for v in verdicts.values())
        if must_redact:
            redactor = redactor or new_redactor()
            if redactor is None:
                history.withheld += 1
                continue
            content = redactor.redact(content)
        history.turns.append((role, content))
        history.turn_sources.append(
            [
                (s, known.get(s.collection_id or 0, endpoints.SENSITIVITY_IN_HOUSE), must_redact)
                for s in drew_on
            ]
        )
    return history, redactor


# --- the ledger -----------------------------------------------------------------------------------


def record(
    endpoint: Endpoint,
    role: str,
    *,
    user: User | None,
    message_id: int | None,
    screened: Screened | None = None,
    history: History | None = None,
    history_turns: int | None = None,
) -> int:
    """Ledger rows for one model call about to be made: one per passage it carries, and one per
    source of each earlier answer it repeats (the last `history_turns` turns of `history`, all
    without it; a source already in the passages is not repeated).
    In-process models send nothing anywhere and get no rows. Returns the row count."""
    if endpoint.in_process:
        return 0
    rows: list[Disclosure] = []
    seen: set[tuple[int | None, int | None]] = set()

    def add(chunk_id, document_id, collection_id, sensitivity: str, redacted: bool) -> None:
        if (chunk_id, document_id) in seen:
            return
        seen.add((chunk_id, document_id))
        rows.append(
            Disclosure(
                user=user if user is not None and user.is_authenticated else None,
                message_id=message_id,
                endpoint=endpoint.name[:100],
                host=endpoint.host[:255],
                location=endpoint.location,
                role=role,
                chunk_id=chunk_id,
                document_id=document_id,
                collection_id=collection_id,
                sensitivity=sensitivity,
                redacted=redacted,
            )
        )

    if screened is not None:
        for passage, redacted in zip(screened.originals, screened.redacted, strict=True):
            add(
                passage.chunk_id,
                passage.document_id,
                passage.collection_id,
                screened.sensitivity.get(passage.collection_id, endpoints.SENSITIVITY_IN_HOUSE),
                redacted,
            )
    if history is not None:
        for source, sensitivity, redacted in history.sources(history_turns):
            add(source.chunk_id, source.document_id, source.collection_id, sensitivity, redacted)
    Disclosure.objects.bulk_create(rows)
    return len(rows)


def restore(redactor: Any | None, pieces: Iterable[str]) -> Iterator[str]:
    """The answer's pieces with placeholders put back (as is without a redactor)."""
    if redactor is None:
        yield from pieces
    else:
        # THINKING pieces are empty strings: a redacted answer shows no "thinking" notice.
        yield from redactor.restore_stream(piece for piece in pieces if piece)


# --- what the reader is told ----------------------------------------------------------------------


def withheld_note(endpoint: Endpoint, withheld: int, history_withheld: int = 0) -> str:
    """The sentence added to an answer when some material could not be sent to `endpoint`."""
    if not withheld and not history_withheld:
        return ""
    others = ", ".join(e.display for e in in_house_answerers())
    parts = []
    if withheld:
        parts.append(
            f"{withheld} passage{'s' if withheld != 1 else ''} from collections that may not be "
            f"sent to {endpoint.display} {'were' if withheld != 1 else 'was'} not used"
        )
    if history_withheld:
        parts.append(
            f"{history_withheld} earlier answer{'s' if history_withheld != 1 else ''} of this "
            "conversation could not be shown to it"
        )
    return f"Note: {'; '.join(parts)}. An in-house model ({others}) could use them."


def nothing_allowed_text(endpoint: Endpoint, withheld: int) -> str:
    others = ", ".join(e.display for e in in_house_answerers())
    return (
        f"The {withheld} passage{'s' if withheld != 1 else ''} found for this question come from "
        f"collections that may not be sent to {endpoint.display}, so nothing was sent to it. "
        f"Ask again with an in-house model ({others}) to use them."
    )
