"""The audit log: `record`, which every write action (ingestion.services, core.apikeys,
retrieval.answering) calls inside its own transaction, and the CSV export (who asked what, when,
which documents were cited, who uploaded or deleted what, key use).

Entry points (views, admin, API, commands) never record: they pass the acting user and `Via` to
the action, which records. Core imports no other app: the CSV's document titles come from a
lookup the documents' app registers (`register_document_titles`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from typing import IO

from django.conf import settings
from django.http import HttpRequest

from core.models import AuditEvent

Action = AuditEvent.Action
Via = AuditEvent.Via

# Detail keys that may carry question text; dropped with the question when RAG_AUDIT_QUESTIONS
# is off, so switching it off cannot be undone by a caller that put the text in `detail`.
QUESTION_KEYS = frozenset({"question", "query", "search_query", "prompt"})

CSV_COLUMNS = [
    "time",
    "user",
    "action",
    "via",
    "question",
    "document_ids",
    "documents",
    "detail",
    "ip",
]


def record(
    action: Action,
    *,
    user=None,
    via: Via | str = "",
    question: str = "",
    document_ids: Iterable[int] = (),
    detail: dict | None = None,
    request: HttpRequest | None = None,
    ip: str | None = None,
) -> AuditEvent:
    """Record an event. Question text is kept only while RAG_AUDIT_QUESTIONS is on.

    The client address is `ip`, else read from `request` (see client_ip)."""
    if action not in Action.values:
        raise ValueError(f"unknown audit action {action!r}")
    if via and via not in Via.values:
        raise ValueError(f"unknown audit entry point {via!r}")
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    detail = dict(detail or {})
    if not settings.RAG_AUDIT_QUESTIONS:
        question = ""
        detail = {k: v for k, v in detail.items() if k not in QUESTION_KEYS}
    return AuditEvent.objects.create(
        action=action,
        user=user,
        username=user.get_username() if user else "",
        via=via,
        question=question,
        document_ids=sorted({int(i) for i in document_ids}),
        detail=detail,
        ip=ip or client_ip(request),
    )


def client_ip(request: HttpRequest | None) -> str | None:
    """The client's address: the socket peer, or behind DJANGO_PROXY_COUNT trusted proxies the
    address the nearest of them saw (the rest of X-Forwarded-For is the client's to forge)."""
    if request is None:
        return None
    proxies = getattr(settings, "AXES_IPWARE_PROXY_COUNT", None) or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies] or None
    return request.META.get("REMOTE_ADDR") or None


def _cell(value: str) -> str:
    """Neutralise spreadsheet formulas: questions are typed by users, and a cell starting with
    = + - @ (or a tab/CR) would be evaluated by Excel or LibreOffice when the CSV is opened."""
    if value and value[0] in "=+-@\t\r":
        return "'" + value
    return value


DocumentTitles = Callable[[set[int]], dict[int, str]]
_document_titles: DocumentTitles = lambda ids: {}  # noqa: E731  (until the documents' app says)


def register_document_titles(lookup: DocumentTitles) -> None:
    """How the CSV names documents by id: set by ingestion's AppConfig.ready."""
    global _document_titles
    _document_titles = lookup


def export_csv(
    events: Iterable[AuditEvent],
    out: IO[str],
    *,
    user,
    via: Via,
    request: HttpRequest | None = None,
) -> int:
    """Write `events` as CSV to `out` for `user`; exporting the log is itself recorded in it."""
    count = write_csv(events, out)
    record(Action.AUDIT_EXPORT, user=user, via=via, detail={"rows": count}, request=request)
    return count


def write_csv(events: Iterable[AuditEvent], out: IO[str]) -> int:
    """Write `events` as CSV (CSV_COLUMNS) to `out`; returns the number of rows written.

    Document titles are looked up now; a document deleted since shows as "(deleted #id)".
    """
    events = list(events)
    shown = _document_titles({i for event in events for i in event.document_ids or []})
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for event in events:
        documents = "; ".join(shown.get(i, f"(deleted #{i})") for i in event.document_ids or [])
        writer.writerow(
            [
                event.at.isoformat(),
                _cell(event.username),
                event.action,
                event.via,
                _cell(event.question),
                " ".join(str(i) for i in event.document_ids or []),
                _cell(documents),
                _cell(json.dumps(event.detail, sort_keys=True, ensure_ascii=False)),
                event.ip or "",
            ]
        )
    return len(events)
