from django.apps import AppConfig


class RetrievalConfig(AppConfig):
    name = "retrieval"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ingestion.signals import document_deleted
        from retrieval import services

        # A deleted document's text leaves the answers and citations that quoted it too.
        document_deleted.connect(services.forget_deleted_document, weak=False)
