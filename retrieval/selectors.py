"""Read paths for conversations: a user's own conversations and messages, with each citation
shown only while the user may still read the cited document (decided now, not when answered),
and an answer's text withheld once it cites a document the user can no longer read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet

from ingestion.models import Chunk, Document
from ingestion.parsing import PDF
from ingestion.permissions import readable_documents
from retrieval.answering import CitationView, citation_view
from retrieval.models import Citation, Conversation, Message

# An answer may copy a cited passage word for word (the extractive answerer always does), so once
# the reader loses access to a cited document the answer's text is withheld along with the citation.
REDACTED_NOTICE = "This answer quoted documents you can no longer access."


@dataclass(frozen=True)
class MessageView:
    """A message as its author sees it now. A citation whose document is gone or no longer
    readable has document_id None and empty title, heading and snippet (show "unavailable"), and
    the answer citing it has REDACTED_NOTICE as its content."""

    id: int
    role: str
    content: str
    outcome: str
    generator: str
    search_query: str
    feedback: int
    feedback_comment: str
    latency_ms: int | None
    created_at: datetime
    citations: list[CitationView] = field(default_factory=list)


def conversations_for(user: User | AnonymousUser) -> QuerySet[Conversation]:
    """The user's conversations, most recently active first."""
    if not user or not user.is_authenticated:
        return Conversation.objects.none()
    return Conversation.objects.filter(user=user).order_by("-updated_at", "-id")


def get_conversation(user: User | AnonymousUser, conversation_id: int) -> Conversation | None:
    """The conversation if it is the user's own, else None (answer 404: do not reveal others')."""
    return conversations_for(user).filter(pk=conversation_id).first()


def _unavailable(citation: Citation) -> CitationView:
    return CitationView(citation.number, None, None, "", None, "", "")


def _view(citation: Citation, readable: set[int]) -> CitationView:
    if citation.document_id is None or citation.document_id not in readable:
        return _unavailable(citation)
    return citation_view(citation)


def _readable_among(user: User | AnonymousUser, document_ids: set[int]) -> set[int]:
    if not document_ids:
        return set()
    return set(readable_documents(user).filter(pk__in=document_ids).values_list("pk", flat=True))


def answers_quoting_unreadable(user: User | AnonymousUser, message_ids: Iterable[int]) -> set[int]:
    """Those of `message_ids` that cite a document `user` cannot read now (or one since
    deleted): their text may quote it, so it is shown to nobody and never goes back into a
    prompt."""
    pairs = list(
        Citation.objects.filter(message_id__in=list(message_ids)).values_list(
            "message_id", "document_id"
        )
    )
    readable = _readable_among(user, {d for _, d in pairs if d is not None})
    return {m for m, d in pairs if d is None or d not in readable}


def messages_with_citations(
    user: User | AnonymousUser, conversation: Conversation
) -> list[MessageView]:
    """The conversation's messages, oldest first, each with the citations the user may see;
    an answer citing a document the user can no longer read reads REDACTED_NOTICE."""
    if conversation.user_id != getattr(user, "pk", None):
        raise PermissionDenied("This conversation belongs to someone else.")
    messages = list(
        conversation.messages.prefetch_related("citations").order_by("created_at", "id")
    )
    document_ids = {
        c.document_id for m in messages for c in m.citations.all() if c.document_id is not None
    }
    readable = _readable_among(user, document_ids)
    redacted = answers_quoting_unreadable(user, [m.pk for m in messages])
    return [
        MessageView(
            id=m.pk,
            role=m.role,
            content=REDACTED_NOTICE if m.pk in redacted else m.content,
            outcome=m.outcome,
            generator=m.generator,
            search_query=m.search_query,
            feedback=m.feedback,
            feedback_comment=m.feedback_comment,
            latency_ms=m.latency_ms,
            created_at=m.created_at,
            citations=[_view(c, readable) for c in m.citations.all()],
        )
        for m in messages
    ]


def visible_citation(user: User | AnonymousUser, citation: Citation | int) -> CitationView | None:
    """One citation of the user's own conversations, if its document is still readable to them;
    None otherwise (another user's citation, a deleted or no longer readable document)."""
    if not user or not user.is_authenticated:
        return None
    if isinstance(citation, int):
        citation = (
            Citation.objects.select_related("message__conversation").filter(pk=citation).first()
        )
        if citation is None:
            return None
    if citation.message.conversation.user_id != user.pk or citation.document_id is None:
        return None
    if not _readable_among(user, {citation.document_id}):
        return None
    return _view(citation, {citation.document_id})


def message_of(user: User | AnonymousUser, message_id: int) -> Message | None:
    """An assistant or user message of the user's own conversations (for feedback), else None."""
    if not user or not user.is_authenticated:
        return None
    return (
        Message.objects.select_related("conversation")
        .filter(pk=message_id, conversation__user=user)
        .first()
    )


@dataclass(frozen=True)
class LibraryState:
    """What the user's readable collections hold, for the chat page's empty and busy states."""

    ready: int
    in_progress: int
    failed: int


def library_state(user: User | AnonymousUser) -> LibraryState:
    counts = readable_documents(user).aggregate(
        ready=Count("pk", filter=Q(status=Document.Status.READY)),
        in_progress=Count(
            "pk", filter=Q(status__in=[Document.Status.QUEUED, Document.Status.PROCESSING])
        ),
        failed=Count("pk", filter=Q(status=Document.Status.FAILED)),
    )
    return LibraryState(**counts)


@dataclass(frozen=True)
class PassagePart:
    text: str
    cited: bool


def passage_in_context(citation: Citation) -> list[PassagePart]:
    """The cited chunk between its neighbours, so the reader sees it in its surroundings. The
    caller has checked the citation is visible to its reader (visible_citation)."""
    chunk = citation.chunk
    if chunk is None:  # re-ingested since: the chunk is gone, the stored snippet is what we have
        return [PassagePart(citation.snippet, True)]
    around = {
        part.ordinal: part.text
        for part in Chunk.objects.filter(
            document_id=chunk.document_id,
            ordinal__gte=chunk.ordinal - 1,
            ordinal__lte=chunk.ordinal + 1,
        ).only("ordinal", "text")
    }
    parts = []
    if (before := around.get(chunk.ordinal - 1)) is not None:
        parts.append(PassagePart(_without_overlap(before, chunk.text, at_end=True), False))
    parts.append(PassagePart(chunk.text, True))
    if (after := around.get(chunk.ordinal + 1)) is not None:
        parts.append(PassagePart(_without_overlap(after, chunk.text, at_end=False), False))
    return [part for part in parts if part.text.strip()]


def _without_overlap(neighbour: str, cited: str, *, at_end: bool) -> str:
    """Neighbouring chunks repeat whole lines of the cited one (the chunker's overlap); drop
    them so the context does not show the passage twice."""
    lines, cited_lines = neighbour.split("\n"), cited.split("\n")
    for size in range(min(len(lines), len(cited_lines)), 0, -1):
        if at_end and lines[-size:] == cited_lines[:size]:
            return "\n".join(lines[:-size])
        if not at_end and lines[:size] == cited_lines[-size:]:
            return "\n".join(lines[size:])
    return neighbour


@dataclass(frozen=True)
class PdfPlace:
    """Where a cited PDF passage is: the page to open and the boxes to highlight (lists of
    [page, left, top, right, bottom], shares of the page from its top left corner). Without
    boxes (chunks stored before they were kept, or re-ingested since the answer), the viewer
    finds the passage by its text on the page."""

    page: int
    page_count: int | None
    boxes: list[list[float]]
    text: str


def pdf_place(citation: Citation) -> PdfPlace | None:
    """The place of a cited passage of a PDF; None for other formats. The caller has checked
    the citation is visible to its reader (visible_citation)."""
    document = citation.document
    if document is None or document.content_type != PDF:
        return None
    chunk = citation.chunk
    boxes = [list(box) for box in chunk.page_boxes] if chunk is not None else []
    if boxes:
        page = int(boxes[0][0])
    else:
        page = (chunk.page_start if chunk is not None else None) or citation.page or 1
    return PdfPlace(
        page=page,
        page_count=document.page_count,
        boxes=boxes,
        text=chunk.text if chunk is not None else citation.snippet,
    )
