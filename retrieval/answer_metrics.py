"""Answer latency and outcomes for /metrics, from the stored answer itself: a post_save receiver
on Message (connected in RetrievalConfig) counts each assistant message when answering saves its
outcome and latency, so answering needs no knowledge of metrics."""

from __future__ import annotations

from core import metrics
from retrieval.models import Message


def answer_saved(
    sender: type[Message],
    instance: Message,
    created: bool = False,
    update_fields: frozenset[str] | None = None,
    **kwargs,
) -> None:
    """Counts an answer once: when it is saved with its latency (retrieval.answering saves it
    so once, when the answer ends). Feedback, renames and redaction save other fields."""
    if created or instance.role != Message.Role.ASSISTANT or not instance.outcome:
        return
    if instance.latency_ms is None or (update_fields and "latency_ms" not in update_fields):
        return
    generator = instance.generator.partition(":")[0] or "none"
    metrics.ANSWERS.labels(outcome=instance.outcome, generator=generator).inc()
    metrics.ANSWER_SECONDS.labels(outcome=instance.outcome).observe(instance.latency_ms / 1000)
