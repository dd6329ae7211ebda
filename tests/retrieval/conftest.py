"""Fixtures for the retrieval tests: the fake OpenAI-compatible server and a few pages of the dev
evaluation corpus, ingested once per test module by the real in-process pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from core.models import AuditEvent
from ingestion.models import Collection, Document
from tests.fakes.openai_server import FakeOpenAIServer, fake_llm

DEV_CORPUS = Path(settings.BASE_DIR).parent / "shared" / "eval" / "dev" / "corpus"
DEV_PAGES = ("copy.html", "bisect.html", "collections.html", "contextvars.html")

__all__ = ["DEV_CORPUS", "DEV_PAGES", "FakeOpenAIServer", "dev_corpus", "fake_llm"]


@pytest.fixture(scope="module")
def dev_corpus(django_db_setup, django_db_blocker) -> Iterator[dict[str, Document]]:
    """An everyone-visible collection holding DEV_PAGES, ready; {file name: Document}.

    Committed outside the per-test transactions (ingesting takes seconds), and removed when the
    module's tests are done so that tests of other modules never see it."""
    from ingestion import pipeline, services

    with django_db_blocker.unblock():
        last_row = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        collection = Collection.objects.create(
            name="Python library (dev corpus)", visibility=Collection.Visibility.EVERYONE
        )
        documents = {}
        for name in DEV_PAGES:
            result = services.register_path(collection, DEV_CORPUS / name, enqueue=False)
            pipeline.ingest(result.document.pk)
            result.document.refresh_from_db()
            assert result.document.status == Document.Status.READY, result.document.error
            documents[name] = result.document
        # Its uploads are audited (via=system) and committed like the corpus: gone, so that no
        # test counting audit rows, of this module or later ones, sees the fixture's.
        AuditEvent.objects.filter(pk__gt=last_row).delete()
    yield documents
    with django_db_blocker.unblock():
        collection.delete()
