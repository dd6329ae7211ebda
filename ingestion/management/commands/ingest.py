"""manage.py ingest PATH... --collection NAME [--sync]: register files (folders recursively)."""

from __future__ import annotations

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.audit import Via
from ingestion import pipeline, services
from ingestion.models import Collection


class Command(BaseCommand):
    help = "Upload files or folders (recursively) into a collection and ingest them."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument("--collection", required=True, help="created when it does not exist")
        parser.add_argument(
            "--sync",
            action="store_true",
            help="run the pipeline in this process instead of queueing",
        )
        parser.add_argument(
            "--everyone",
            action="store_true",
            help="make a new collection readable by everyone signed in",
        )

    def handle(
        self, *args, paths: list[Path], collection: str, sync: bool, everyone: bool, **options
    ):
        files = sorted({f for p in paths for f in self._files(p)})
        if not files:
            raise CommandError("No files found.")
        target, created = services.get_or_create_collection(
            collection,
            visibility=Collection.Visibility.EVERYONE
            if everyone
            else Collection.Visibility.RESTRICTED,
            via=Via.CLI,
        )
        if created:
            self.stdout.write(
                f"Created collection {target.name!r} ({target.get_visibility_display()})."
            )
        started = time.monotonic()
        rejected: list[tuple[Path, str]] = []
        registered = []
        outcomes = services.register_uploads(target, files, enqueue=not sync, via=Via.CLI)
        for path, outcome in zip(files, outcomes, strict=True):
            if outcome.rejected is not None:
                rejected.append((path, str(outcome.rejected)))
            elif outcome.result is not None:
                registered.append(outcome.result)
                if not outcome.result.created:
                    self.stdout.write(f"  same content already present: {path}")
        if not sync:
            self.stdout.write(
                f"Queued {sum(r.created for r in registered)} documents; {len(rejected)} rejected."
            )
            for path, reason in rejected:
                self.stdout.write(f"  rejected {path}: {reason}")
            return
        results = [pipeline.ingest(r.document.pk) for r in registered if r.created]
        self._summary(results, rejected, time.monotonic() - started)

    def _summary(self, results, rejected, seconds: float) -> None:
        ready = [r for r in results if r.status == "ready"]
        failed = [r for r in results if r.status == "failed"]
        self.stdout.write(
            f"ready: {len(ready)}  failed: {len(failed) + len(rejected)}  "
            f"chunks: {sum(r.chunks for r in ready)}  pages: {sum(r.pages or 0 for r in ready)}  "
            f"seconds: {seconds:.1f}"
        )
        for result in failed:
            self.stdout.write(f"  failed document {result.document_id}: {result.error}")
        for path, reason in rejected:
            self.stdout.write(f"  rejected {path}: {reason}")

    @staticmethod
    def _files(path: Path) -> list[Path]:
        if path.is_dir():
            return [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
        if path.is_file():
            return [path]
        raise CommandError(f"No such file or folder: {path}")
