"""Answer step: rewrite → search → prompt → generate → cite, streamed as events.

The web UI, the API and the OpenAI-compatible endpoint all call `stream_answer` (or `answer`,
which collects the stream); they translate events, they hold no answering logic.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from django.contrib.auth.models import User

from retrieval.models import Conversation


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


@dataclass(frozen=True)
class AnswerEvent:
    """One event of a streamed answer, in this order: one `meta`, any number of `token`s, one
    `citations`, one `done` (or an `error` instead of the rest)."""

    kind: str  # meta | token | citations | done | error
    text: str = ""  # token: the text piece; error: a message fit to show a person
    conversation_id: int | None = None  # meta
    message_id: int | None = None  # meta (the assistant message being written)
    citations: list[CitationView] = field(default_factory=list)  # citations
    outcome: str = ""  # done: a Message.Outcome value


@dataclass(frozen=True)
class Answer:
    text: str
    citations: list[CitationView]
    conversation_id: int
    message_id: int
    outcome: str


def stream_answer(
    user: User,
    question: str,
    *,
    conversation: Conversation | None = None,
    collection_id: int | None = None,
    via: str = "web",
) -> Iterator[AnswerEvent]:
    raise NotImplementedError  # being built (issue #3)


def answer(
    user: User,
    question: str,
    *,
    conversation: Conversation | None = None,
    collection_id: int | None = None,
    via: str = "web",
) -> Answer:
    raise NotImplementedError  # being built (issue #3)
