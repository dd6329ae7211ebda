"""Collections, documents and their chunks (vector + full-text), and who may read them.

Business rules live in services.py and permissions.py; these classes only describe the data.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from pgvector.django import HnswIndex, VectorField

# The text-search configuration used for chunks and queries alike.
FTS_CONFIG = "english"


class Collection(models.Model):
    """A named set of documents; the unit of access control."""

    class Visibility(models.TextChoices):
        EVERYONE = "everyone", "Everyone signed in"
        RESTRICTED = "restricted", "Only listed groups and users"

    class Sensitivity(models.TextChoices):
        """Which model endpoints may receive this collection's text (core.endpoints decides)."""

        IN_HOUSE = "in_house", "In-house only"
        REDACTED = "redacted", "Redacted: external models after personal data is removed"
        SHAREABLE = "shareable", "Shareable: approved external models as is"

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    visibility = models.CharField(
        max_length=20, choices=Visibility.choices, default=Visibility.RESTRICTED
    )
    sensitivity = models.CharField(
        max_length=20, choices=Sensitivity.choices, default=Sensitivity.IN_HOUSE
    )
    # The answer endpoint (core.endpoints name) used unless the person asking picks another;
    # blank: the first in-house answer endpoint.
    default_model = models.CharField(max_length=100, blank=True)
    reader_groups = models.ManyToManyField(Group, blank=True, related_name="readable_collections")
    reader_users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="readable_collections"
    )
    managers = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="managed_collections"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def _document_path(instance: Document, filename: str) -> str:
    # Random names: the original name is kept in the row, never trusted as a path.
    return f"documents/{uuid.uuid4().hex}"


class Document(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        PROCESSING = "processing", "Processing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class Stage(models.TextChoices):
        """Where a `processing` document is in the pipeline (ingestion.pipeline writes it)."""

        PARSING = "parsing", "Parsing"
        CHUNKING = "chunking", "Chunking"
        EMBEDDING = "embedding", "Embedding"
        STORING = "storing", "Storing"

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="documents")
    file = models.FileField(upload_to=_document_path, max_length=300)
    original_name = models.CharField(max_length=255)
    title = models.CharField(max_length=500, blank=True)
    content_type = models.CharField(max_length=150)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    page_count = models.PositiveIntegerField(null=True, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)  # processing runs started, ever
    # Runs started since the document last finished (ready or failed) or a person retried it. A
    # run that dies with its worker (out of memory, killed) never finishes, so this counts the
    # times the document stopped a worker; at RAG_MAX_ATTEMPTS it fails instead of running again.
    unfinished_runs = models.PositiveIntegerField(default=0)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    processing_started_at = models.DateTimeField(null=True, blank=True)
    # "host:pid" of the process working on it, so a restarted worker can tell abandoned work.
    claimed_by = models.CharField(max_length=200, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # Progress of the run under way, for the console and the API: the stage and, while embedding,
    # chunks embedded of all. Written between stages and slices of chunks outside the run's final
    # transaction; cleared when the document ends ready or failed.
    progress_stage = models.CharField(max_length=20, choices=Stage.choices, blank=True)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["collection", "sha256"], name="unique_document_per_collection"
            ),
        ]
        indexes = [models.Index(fields=["status", "collection"])]

    def __str__(self) -> str:
        return self.title or self.original_name


class Chunk(models.Model):
    """A passage of a document, sized for the embedding model, with its vector and tsvector."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    title = models.CharField(max_length=500, blank=True)  # the document's, copied for search
    heading = models.TextField(blank=True)  # heading path, "Part > Section > Subsection"
    page_start = models.PositiveIntegerField(null=True, blank=True)
    page_end = models.PositiveIntegerField(null=True, blank=True)
    # Where the passage is on the pages of a PDF, for the viewer to highlight it: a list of
    # [page, left, top, right, bottom], edges as shares (0..1) of the page from its top left
    # corner (ingestion.chunking.PageBox). Empty for other formats and chunks stored before.
    page_boxes = models.JSONField(default=list, blank=True)
    token_count = models.PositiveIntegerField()
    embedding = VectorField(dimensions=settings.RAG_EMBEDDING_DIM)
    # Kept in sync by PostgreSQL itself: a stored generated column, title and headings weighted up.
    search_vector = models.GeneratedField(
        expression=SearchVector("title", weight="A", config=FTS_CONFIG)
        + SearchVector("heading", weight="A", config=FTS_CONFIG)
        + SearchVector("text", weight="B", config=FTS_CONFIG),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["document_id", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["document", "ordinal"], name="unique_chunk_ordinal"),
        ]
        indexes = [
            HnswIndex(
                name="chunk_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
            GinIndex(fields=["search_vector"], name="chunk_search_vector_gin"),
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.ordinal}"


class TermStatistic(models.Model):
    """How many searchable passages (chunks of ready documents) of a collection hold a lexeme:
    the document frequencies full-text search weighs words by. The row with the empty lexeme
    (never a real one) counts the collection's searchable passages.

    Written only by PostgreSQL triggers on chunks and documents (migration 0004), in the same
    transaction as the change, so every write path keeps it right; read by retrieval.search.
    """

    pk = models.CompositePrimaryKey("collection_id", "lexeme")
    # No foreign key: rows leave with the chunks they count, in whatever order a delete runs.
    collection_id = models.BigIntegerField()
    lexeme = models.TextField()
    passages = models.IntegerField()

    def __str__(self) -> str:
        return f"{self.collection_id}:{self.lexeme or '(passages)'}={self.passages}"
