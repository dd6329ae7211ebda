"""The audit log: one function every entry point calls to record who did what, and the CSV
export (who asked what, when, which documents were cited, who uploaded or deleted what, key use).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import IO

from django.conf import settings
from django.http import HttpRequest

from ingestion.models import Document
from retrieval.models import AuditEvent

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
    action: str,
    *,
    user=None,
    via: str = "",
    question: str = "",
    document_ids: Iterable[int] = (),
    detail: dict | None = None,
    request: HttpRequest | None = None,
) -> AuditEvent:
    """Record an event. Question text is kept only while RAG_AUDIT_QUESTIONS is on."""
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
        ip=client_ip(request),
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


def write_csv(events: Iterable[AuditEvent], out: IO[str]) -> int:
    """Write `events` as CSV (CSV_COLUMNS) to `out`; returns the number of rows written.

    Document titles are looked up now; a document deleted since shows as "(deleted #id)".
    """
    events = list(events)
    ids = {i for event in events for i in event.document_ids or []}
    shown = {
        pk: title or name
        for pk, title, name in Document.objects.filter(pk__in=ids).values_list(
            "pk", "title", "original_name"
        )
    }
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
