"""Celery tasks of the retrieval app: thin wrappers that call services.

`purge_expired` runs hourly from Celery beat (ragsite/celeryconfig.py).
"""

from __future__ import annotations

from celery import shared_task

from retrieval import retention


@shared_task(acks_late=True)
def purge_expired() -> dict:
    """Apply RAG_RETENTION_DAYS; returns the counts deleted (all zero when retention is off)."""
    result = retention.purge_expired()
    return {
        "conversations": result.conversations,
        "messages": result.messages,
        "audit_events": result.audit_events,
        "login_records": result.login_records,
        "disclosures": result.disclosures,
    }
