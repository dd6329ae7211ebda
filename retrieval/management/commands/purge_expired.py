"""manage.py purge_expired [--days N] [--dry-run]: apply the retention period now."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from retrieval.retention import purge_expired


class Command(BaseCommand):
    help = (
        "Delete conversations, audit events and sign-in records older than RAG_RETENTION_DAYS "
        "(or --days). Celery beat runs the same purge hourly."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days", type=int, help="override RAG_RETENTION_DAYS for this run (0 keeps all)"
        )
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args, days: int | None, dry_run: bool, **options):
        if days is not None and days < 0:
            raise CommandError("--days must be 0 (keep everything) or more.")
        result = purge_expired(days=days, dry_run=dry_run)
        if result.cutoff is None:
            effective = settings.RAG_RETENTION_DAYS if days is None else days
            self.stdout.write(
                f"Retention is off (RAG_RETENTION_DAYS={effective}): nothing deleted."
            )
            return
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(
            f"{verb} {result.conversations} conversations ({result.messages} messages), "
            f"{result.audit_events} audit events, {result.login_records} sign-in records and "
            f"{result.disclosures} disclosure ledger rows older than {result.cutoff:%Y-%m-%d %H:%M %Z}."
        )
