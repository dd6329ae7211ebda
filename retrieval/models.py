"""Conversations, messages and their citations; evaluation runs.

Citations point at documents and chunks; what a user may see of them is decided at read time by
ingestion.permissions, so losing access to a collection hides old citations too.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from core.models import ApiKey, AuditEvent  # noqa: F401  (moved; old import path)
from ingestion.models import Chunk, Collection, Document


class Conversation(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    # Optional scope: ask only this collection (None = every collection the user may read).
    collection = models.ForeignKey(
        Collection, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["user", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Outcome(models.TextChoices):
        ANSWERED = "answered", "Answered"
        NO_ANSWER = "no_answer", "Nothing relevant found"
        MODEL_UNAVAILABLE = "model_unavailable", "The model is unavailable"
        ERROR = "error", "Error"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=20, choices=Role.choices)
    content = models.TextField()
    # Assistant messages: the standalone query searched for, how it went, and by which generator.
    search_query = models.TextField(blank=True)
    outcome = models.CharField(max_length=30, choices=Outcome.choices, blank=True)
    generator = models.CharField(max_length=200, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    feedback = models.SmallIntegerField(default=0)  # -1 thumbs down, 0 none, +1 thumbs up
    feedback_comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:60]}"


class Citation(models.Model):
    """A passage an answer cites as [number]."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="citations")
    number = models.PositiveIntegerField()
    document = models.ForeignKey(
        Document, null=True, on_delete=models.SET_NULL, related_name="citations"
    )
    chunk = models.ForeignKey(Chunk, null=True, on_delete=models.SET_NULL, related_name="citations")
    document_title = models.CharField(max_length=500, blank=True)
    page = models.PositiveIntegerField(null=True, blank=True)
    heading = models.TextField(blank=True)
    snippet = models.TextField(blank=True)
    score = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["message_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["message", "number"], name="unique_citation_number")
        ]

    def __str__(self) -> str:
        return f"[{self.number}] {self.document_title}"


class EvalRun(models.Model):
    """One `manage.py rag_eval` run: what was measured with what, and the figures, so the console's
    Quality page can show whether a change helped or hurt."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    questions_file = models.CharField(max_length=300)
    corpus = models.CharField(max_length=300)
    question_count = models.PositiveIntegerField(default=0)
    generator = models.CharField(max_length=200, blank=True)  # empty: retrieval only
    embedding_model = models.CharField(max_length=300)
    # {"retrieval": {mode: {...}}, "distinct": {...}, "in_context": {...}, "answers": {...}}
    figures = models.JSONField(default=dict)
    # Questions missed: [{"id", "question", "expected", "answer", "cited", ...}]
    misses = models.JSONField(default=list)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"rag_eval {self.questions_file} at {self.created_at:%Y-%m-%d %H:%M}"


class Disclosure(models.Model):
    """One passage one model call carried: which endpoint received which passage, for whom.

    Written (in bulk, before the call) for every answer and query-rewrite call that carries
    passages or earlier answers, and for rerank calls to external endpoints. Ids are plain numbers,
    not foreign keys: the record outlives re-ingested chunks and deleted documents; it expires with
    RAG_RETENTION_DAYS like the audit log."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    endpoint = models.CharField(max_length=100)
    host = models.CharField(max_length=255, blank=True)
    location = models.CharField(max_length=20)  # in_house | external
    role = models.CharField(max_length=20)  # answer | rewrite | rerank | embed
    chunk_id = models.BigIntegerField(null=True, blank=True)
    document_id = models.BigIntegerField(null=True, blank=True)
    collection_id = models.BigIntegerField(null=True, blank=True)
    sensitivity = models.CharField(max_length=20)
    redacted = models.BooleanField(default=False)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"chunk {self.chunk_id} → {self.endpoint} ({self.role})"
