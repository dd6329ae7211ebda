"""manage.py search "question" [--collection NAME] [--mode M] [--limit N]: debug retrieval.

Prints the passages search returns with their fused score, vector and full-text ranks and cosine
similarity. It sees every collection (like a superuser) unless --collection narrows it.
"""

from __future__ import annotations

import textwrap

from django.core.management.base import BaseCommand, CommandError

from ingestion.models import Collection
from retrieval.search import MODES, search_collections


class Command(BaseCommand):
    help = "Show what search returns for a question, with the scores behind the order."
    # Only the models and the search are used; a half-written view elsewhere must not stop it.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("question")
        parser.add_argument(
            "--collection", action="append", help="collection name; repeat for several"
        )
        parser.add_argument("--mode", choices=MODES, default="hybrid")
        parser.add_argument("--limit", type=int, default=8)
        parser.add_argument(
            "--width", type=int, default=300, help="characters of passage text shown (0: all)"
        )

    def handle(self, *args, question: str, collection, mode: str, limit: int, width: int, **opts):
        if limit < 1:
            raise CommandError("--limit must be at least 1.")
        collections = Collection.objects.all()
        if collection:
            collections = collections.filter(name__in=collection)
            missing = set(collection) - set(collections.values_list("name", flat=True))
            if missing:
                raise CommandError(f"No such collection: {', '.join(sorted(missing))}")
        ids = list(collections.values_list("pk", flat=True))
        passages = search_collections(ids, question, limit, mode)
        if not passages:
            self.stdout.write("No passages found.")
            return
        for number, passage in enumerate(passages, start=1):
            ranks = (
                f"score={passage.score:.4f} vector_rank={passage.vector_rank or '-'} "
                f"fts_rank={passage.fts_rank or '-'} similarity={passage.similarity:.3f}"
            )
            if passage.rerank_score is not None:
                ranks += f" rerank={passage.rerank_score:.3f}"
            pages = ""
            if passage.page_start:
                pages = f" p.{passage.page_start}"
                if passage.page_end and passage.page_end != passage.page_start:
                    pages += f"-{passage.page_end}"
            self.stdout.write(
                f"[{number}] {passage.document_title}{pages} "
                f"(document {passage.document_id}, chunk {passage.chunk_id})"
            )
            if passage.heading:
                self.stdout.write(f"    § {passage.heading}")
            self.stdout.write(f"    {ranks}")
            text = " ".join(passage.text.split())
            if width and len(text) > width:
                text = text[: width - 1] + "…"
            self.stdout.write(textwrap.indent(textwrap.fill(text, 96), "    "))
