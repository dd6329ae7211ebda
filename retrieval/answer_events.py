"""The one event type of a streamed answer, and the stream collected into one value.

`answering.stream_answer` yields `AnswerEvent`s: one frozen dataclass per kind, joined in a union,
so every reader dispatches with `match` and mypy's `assert_never` names any kind it forgets.
The outputs made from the stream (server-sent events, OpenAI chunks) are in retrieval.answer_stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Literal, TypeAlias, assert_never


@dataclass(frozen=True)
class CitationView:
    """What a reader is shown of one cited passage."""

    number: int
    document_id: int | None
    chunk_id: int | None
    document_title: str
    page: int | None
    heading: str
    snippet: str


# An answer streams, in this order: one Meta, any number of Tokens (a Thinking before a stretch
# in which a reasoning model thinks), one Citations, one Done; or an Error instead of the rest.


@dataclass(frozen=True)
class Meta:
    """The answer has started: the conversation, and the assistant message being written."""

    conversation_id: int
    message_id: int
    kind: ClassVar[Literal["meta"]] = "meta"


@dataclass(frozen=True)
class Thinking:
    """The model is thinking before it writes (sent once per stretch)."""

    kind: ClassVar[Literal["thinking"]] = "thinking"


@dataclass(frozen=True)
class Token:
    """A piece of the answer's text."""

    text: str
    kind: ClassVar[Literal["token"]] = "token"


@dataclass(frozen=True)
class Citations:
    """The passages the text cites, by their [n] markers; the text is complete."""

    citations: list[CitationView] = field(default_factory=list)
    kind: ClassVar[Literal["citations"]] = "citations"


@dataclass(frozen=True)
class Done:
    outcome: str  # a Message.Outcome value: answered or no_answer
    kind: ClassVar[Literal["done"]] = "done"


@dataclass(frozen=True)
class Error:
    """The answer failed; `text` is a message fit to show a person."""

    text: str
    outcome: str  # a Message.Outcome value: model_unavailable or error
    kind: ClassVar[Literal["error"]] = "error"


AnswerEvent: TypeAlias = Meta | Thinking | Token | Citations | Done | Error


def close(events: Iterable[AnswerEvent]) -> None:
    """Close the answer (its `finally` saves what was written), e.g. when the reader has left."""
    closer = getattr(events, "close", None)
    if closer is not None:
        closer()


@dataclass(frozen=True)
class CollectedAnswer:
    """A whole answer. A failed one has the Error's message as its text and outcome."""

    text: str
    citations: list[CitationView]
    conversation_id: int
    message_id: int
    outcome: str
    error: Error | None = None


def collect(events: Iterable[AnswerEvent]) -> CollectedAnswer:
    """The whole answer, read to its end (and closed)."""
    pieces: list[str] = []
    citations: list[CitationView] = []
    conversation_id = message_id = 0
    outcome = ""
    error: Error | None = None
    try:
        for event in events:
            match event:
                case Meta():
                    conversation_id, message_id = event.conversation_id, event.message_id
                case Thinking():
                    pass
                case Token():
                    pieces.append(event.text)
                case Citations():
                    citations = event.citations
                case Done():
                    outcome = event.outcome
                case Error():
                    pieces, outcome, error = [event.text], event.outcome, event
                case _:
                    assert_never(event)
    finally:
        close(events)
    return CollectedAnswer("".join(pieces), citations, conversation_id, message_id, outcome, error)
