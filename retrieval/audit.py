"""The audit log: one function every entry point calls to record who did what."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.http import HttpRequest

from retrieval.models import AuditEvent


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
    return AuditEvent.objects.create(
        action=action,
        user=user,
        username=user.get_username() if user else "",
        via=via,
        question=question if settings.RAG_AUDIT_QUESTIONS else "",
        document_ids=sorted(set(document_ids)),
        detail=detail or {},
        ip=request.META.get("REMOTE_ADDR") if request is not None else None,
    )
