"""Retention: conversations, audit rows, sign-in records and disclosure ledger rows older than
RAG_RETENTION_DAYS are deleted. Celery beat (retrieval.tasks.purge_expired, hourly) and `manage.py purge_expired` call it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.models import AuditEvent
from retrieval.models import Conversation, Disclosure, Message

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurgeResult:
    cutoff: datetime | None  # None: retention is off (RAG_RETENTION_DAYS=0), nothing deleted
    conversations: int = 0
    messages: int = 0
    audit_events: int = 0
    login_records: int = 0  # django-axes sign-in logs (user names and addresses)
    disclosures: int = 0  # disclosure ledger rows (which model received which passage)

    @property
    def total(self) -> int:
        return (
            self.conversations
            + self.messages
            + self.audit_events
            + self.login_records
            + self.disclosures
        )


def retention_cutoff(days: int | None = None, now: datetime | None = None) -> datetime | None:
    """The instant before which data expires, or None when everything is kept."""
    days = settings.RAG_RETENTION_DAYS if days is None else days
    if days <= 0:
        return None
    return (now or timezone.now()) - timedelta(days=days)


def purge_expired(
    days: int | None = None, now: datetime | None = None, dry_run: bool = False
) -> PurgeResult:
    """Delete what is older than `days` (default RAG_RETENTION_DAYS; 0 keeps everything).

    A conversation expires with its last activity (a thread in use is kept whole, title
    included); its messages and citations go with it. Audit events and sign-in records expire by
    their own time. `dry_run` counts without deleting.
    """
    cutoff = retention_cutoff(days, now)
    if cutoff is None:
        return PurgeResult(None)
    conversations = Conversation.objects.filter(updated_at__lt=cutoff)
    messages = Message.objects.filter(conversation__in=conversations)
    events = AuditEvent.objects.filter(at__lt=cutoff)
    disclosures = Disclosure.objects.filter(at__lt=cutoff)
    logins = _login_records(cutoff, now or timezone.now())
    if dry_run:
        return PurgeResult(
            cutoff,
            conversations.count(),
            messages.count(),
            events.count(),
            sum(q.count() for q in logins),
            disclosures.count(),
        )
    with transaction.atomic():
        _, deleted = conversations.delete()  # messages and citations cascade
        conversation_count = deleted.get(Conversation._meta.label, 0)
        message_count = deleted.get(Message._meta.label, 0)
        audit_count, _ = events.delete()
        login_count = sum(q.delete()[0] for q in logins)
        disclosure_count, _ = disclosures.delete()
    result = PurgeResult(
        cutoff, conversation_count, message_count, audit_count, login_count, disclosure_count
    )
    if result.total:
        logger.info(
            "retention: deleted %s conversations (%s messages), %s audit events, %s sign-in "
            "records, %s disclosure ledger rows older than %s",
            result.conversations,
            result.messages,
            result.audit_events,
            result.login_records,
            result.disclosures,
            cutoff.isoformat(),
        )
    return result


def _login_records(cutoff: datetime, now: datetime) -> list:
    """django-axes keeps user names and addresses of sign-ins; they expire like the audit log.
    AccessAttempt, the lockout counter, holds them too: axes clears it only when that user name
    signs in again, so it goes here as well, but never while its lockout may still hold."""
    if not apps.is_installed("axes"):
        return []
    from axes.helpers import get_cool_off
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog

    cool_off = get_cool_off()
    records = [
        AccessLog.objects.filter(attempt_time__lt=cutoff),
        AccessFailureLog.objects.filter(attempt_time__lt=cutoff),
    ]
    if cool_off is not None:  # without a cool-off a lockout lasts until an admin lifts it
        attempts_cutoff = min(cutoff, now - cool_off)
        records.append(AccessAttempt.objects.filter(attempt_time__lt=attempts_cutoff))
    return records
