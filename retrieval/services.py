"""Write paths for conversations and answers: create, rename, delete, feedback, and forgetting a
deleted document's text. `forget_deleted_document` receives ingestion's `document_deleted` signal
(connected in RetrievalConfig), inside the deletion's transaction.
"""

from __future__ import annotations

import csv
from typing import IO

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from core import audit, metrics
from core.audit import Action, Via
from ingestion.models import Collection, Document
from retrieval.models import Citation, Conversation, Disclosure, Message
from retrieval.search import Passage, search

TITLE_CHARS = 80
REDACTED_ANSWER = "[Answer removed: a cited document was deleted.]"
FEEDBACK_VALUES = (-1, 0, 1)


def title_from_question(question: str) -> str:
    """A conversation title: the question's first line, cut at a word near TITLE_CHARS."""
    text = " ".join(question.split())
    if len(text) <= TITLE_CHARS:
        return text
    return text[:TITLE_CHARS].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def _require_owner(user: User, conversation: Conversation) -> None:
    if conversation.user_id != getattr(user, "pk", None):
        raise PermissionDenied("This conversation belongs to someone else.")


def create_conversation(
    user: User, title: str = "", collection: Collection | int | None = None
) -> Conversation:
    """A new conversation of `user`, optionally scoped to one collection."""
    collection_id = collection.pk if isinstance(collection, Collection) else collection
    return Conversation.objects.create(
        user=user, title=title_from_question(title), collection_id=collection_id
    )


def add_history(user: User, conversation: Conversation, turns: list[tuple[str, str]]) -> None:
    """Store earlier (role, text) turns a client sent along (the OpenAI-compatible endpoint), so
    follow-up questions are understood in their context."""
    _require_owner(user, conversation)
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            role=role,
            content=text,
            outcome=Message.Outcome.ANSWERED if role == Message.Role.ASSISTANT else "",
        )
        for role, text in turns
        if role in {Message.Role.USER, Message.Role.ASSISTANT}
    )


def rename_conversation(user: User, conversation: Conversation, title: str) -> Conversation:
    _require_owner(user, conversation)
    title = " ".join(title.split())[:200]
    if not title:
        raise ValueError("A title cannot be empty.")
    conversation.title = title
    conversation.save(update_fields=["title", "updated_at"])
    return conversation


def delete_conversation(user: User, conversation: Conversation) -> None:
    """Delete a conversation with its messages and citations (cascade)."""
    _require_owner(user, conversation)
    conversation.delete()


def set_feedback(user: User, message: Message, value: int, comment: str = "") -> Message:
    """Thumbs up (+1), down (-1) or none (0) on an answer of the user's own conversation."""
    _require_owner(user, message.conversation)
    if message.role != Message.Role.ASSISTANT:
        raise ValueError("Feedback applies to answers only.")
    if value not in FEEDBACK_VALUES:
        raise ValueError("Feedback is -1, 0 or 1.")
    message.feedback = value
    message.feedback_comment = comment.strip()[:2000]
    message.save(update_fields=["feedback", "feedback_comment"])
    return message


def forget_deleted_document(sender=None, *, document: Document, **kwargs) -> None:
    forget_document(document)


def forget_document(document: Document) -> None:
    """Erase what answers and citations kept of `document`'s text: its citations go, and every
    answer that cited it is replaced by a note, since the answer may quote it."""
    with transaction.atomic():
        citations = Citation.objects.filter(Q(document=document) | Q(chunk__document=document))
        message_ids = set(citations.values_list("message_id", flat=True))
        citations.delete()
        Message.objects.filter(pk__in=message_ids).update(content=REDACTED_ANSWER)


def search_passages(
    user: User,
    query: str,
    *,
    via: Via,
    request: HttpRequest | None = None,
    limit: int | None = None,
    collection_ids: list[int] | None = None,
) -> list[Passage]:
    """Search as `user` (only what they may read) and record the search in the audit log."""
    passages = timed_search(user, query, via=via, limit=limit, collection_ids=collection_ids)
    audit.record(
        Action.SEARCH,
        user=user,
        via=via,
        question=query,
        document_ids=[p.document_id for p in passages],
        request=request,
    )
    return passages


def timed_search(
    user: User,
    query: str,
    *,
    via: str,
    limit: int | None = None,
    collection_ids: list[int] | None = None,
) -> list[Passage]:
    """retrieval.search.search, its latency counted in ragsite_search_seconds{via} (failed and
    timed-out searches too). Answers search through it with via="answer"."""
    with metrics.SEARCH_SECONDS.labels(via=str(via)).time():
        return search(user, query, limit=limit, collection_ids=collection_ids)


def open_download(
    user: User, document: Document, *, via: Via, request: HttpRequest | None = None
) -> IO[bytes]:
    """The stored file of a document the caller found readable by `user`, opened for reading;
    every download is audited. FileNotFoundError when the file is missing (nothing recorded)."""
    handle = document.file.open("rb")
    audit.record(
        Action.DOWNLOAD,
        user=user,
        via=via,
        document_ids=[document.pk],
        detail={"name": document.original_name},
        request=request,
    )
    return handle


# --- the disclosure ledger ----------------------------------------------------------------------
LEDGER_COLUMNS = [
    "at",
    "user",
    "message_id",
    "endpoint",
    "host",
    "location",
    "role",
    "chunk_id",
    "document_id",
    "collection_id",
    "sensitivity",
    "redacted",
]


def _cell(value: object) -> str:
    """Spreadsheet formulas neutralised, as in the audit export."""
    text = "" if value is None else str(value)
    return "'" + text if text and text[0] in "=+-@\t\r" else text


def export_disclosures(
    rows: QuerySet[Disclosure],
    out: IO[str],
    *,
    user: User | AnonymousUser,
    via: Via,
    request: HttpRequest | None = None,
) -> int:
    """Write the ledger rows as CSV (LEDGER_COLUMNS) to `out` for `user`; exporting the ledger is
    itself recorded in the audit log. Returns the number of rows written."""
    writer = csv.writer(out)
    writer.writerow(LEDGER_COLUMNS)
    count = 0
    for row in rows.select_related("user").order_by("at", "id").iterator():
        writer.writerow(
            [
                row.at.isoformat(),
                _cell(row.user.username if row.user else ""),
                row.message_id,
                _cell(row.endpoint),
                _cell(row.host),
                row.location,
                row.role,
                row.chunk_id,
                row.document_id,
                row.collection_id,
                row.sensitivity,
                "yes" if row.redacted else "no",
            ]
        )
        count += 1
    audit.record(
        Action.AUDIT_EXPORT,
        user=user,
        via=via,
        detail={"disclosure_rows": count},
        request=request,
    )
    return count
