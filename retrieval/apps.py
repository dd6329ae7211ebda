from django.apps import AppConfig


class RetrievalConfig(AppConfig):
    name = "retrieval"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from ingestion.signals import document_deleted
        from retrieval import answer_metrics, services
        from retrieval.models import Message

        # A deleted document's text leaves the answers and citations that quoted it too.
        document_deleted.connect(services.forget_deleted_document, weak=False)
        # Answer latency and outcomes for /metrics, counted when the answer is stored.
        post_save.connect(answer_metrics.answer_saved, sender=Message, weak=False)
