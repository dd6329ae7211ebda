"""What ingestion tells the apps above it, which it must not import.

`document_deleted(document=...)` is sent by services.delete_document inside its transaction,
before the document's rows go: a receiver (retrieval's, connected in its AppConfig) removes what
it kept of the document's text, and fails the deletion if it cannot.
"""

from django.dispatch import Signal

document_deleted = Signal()
