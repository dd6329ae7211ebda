"""manage.py reingest: queue documents again (failed ones, stuck ones, a collection, or ids)."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from core.audit import Via
from ingestion import services
from ingestion.models import Collection, Document


class Command(BaseCommand):
    help = "Re-queue documents: --stuck (left processing/queued by a dead worker), --failed, ids."

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", type=int, help="document ids")
        parser.add_argument(
            "--stuck", action="store_true", help="documents stuck in processing/queued"
        )
        parser.add_argument(
            "--older-than",
            type=int,
            default=30,
            help="minutes a document must be stuck (default 30)",
        )
        parser.add_argument("--failed", action="store_true", help="every failed document")
        parser.add_argument("--collection", help="every document of this collection")

    def handle(self, *args, ids, stuck, older_than, failed, collection, **options):
        if not (ids or stuck or failed or collection):
            raise CommandError("Say which documents: ids, --stuck, --failed or --collection NAME.")
        documents: list[Document] = []
        requeued: list[Document] = []
        if stuck:
            # Not a fresh start: a document that stopped the worker too often fails instead.
            requeued = services.requeue_stuck(timedelta(minutes=older_than), via=Via.CLI)
        if failed:
            documents += list(Document.objects.filter(status=Document.Status.FAILED))
        if collection:
            try:
                documents += list(Collection.objects.get(name=collection).documents.all())
            except Collection.DoesNotExist as exc:
                raise CommandError(f"No collection named {collection!r}.") from exc
        if ids:
            documents += list(Document.objects.filter(pk__in=ids))
        done = {d.pk for d in requeued}
        unique = [d for d in {d.pk: d for d in documents}.values() if d.pk not in done]
        count = len(requeued) + services.reingest(unique, via=Via.CLI)
        self.stdout.write(f"Queued {count} documents.")
