from django.apps import AppConfig


class IngestionConfig(AppConfig):
    name = "ingestion"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from celery.signals import worker_ready

        from core import audit
        from ingestion import services

        # A starting worker picks up what a dead one left behind.
        worker_ready.connect(services.requeue_abandoned_documents, weak=False)
        # The audit log's CSV names documents by their titles.
        audit.register_document_titles(services.document_titles)
