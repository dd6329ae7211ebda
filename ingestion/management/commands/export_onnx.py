"""manage.py export_onnx: build the int8 ONNX exports of RAG_EMBEDDING_MODEL (for passages and for
questions) into the data dir now (at install or in an image build), not on the first embedding
with RAG_EMBEDDING_BACKEND=onnx-int8."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from ingestion import embedding
from ingestion.onnx_encoder import OnnxExportError


class Command(BaseCommand):
    help = (
        "Export the embedding model to ONNX and quantise it to int8 under the data dir "
        "(kept if an export of the same model files is already there). Reads local files only."
    )
    requires_system_checks: list[str] = []

    def handle(self, *args, **options):
        for use in ("passages", "questions"):
            encoder = embedding.get_onnx_encoder(use)
            started = time.monotonic()
            try:
                encoder.session  # noqa: B018 (opens the cached export, or builds it)
            except OnnxExportError as exc:
                raise CommandError(str(exc)) from exc
            state = "exported" if encoder.built else "already exported"
            self.stdout.write(f"{state}: {encoder.path} ({time.monotonic() - started:.1f}s)")
