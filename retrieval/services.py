"""Write paths for conversations and answers that other apps call (deletion, retention).

`forget_document` is called by ingestion.services.delete_document inside its transaction.
"""

from __future__ import annotations

from ingestion.models import Document


def forget_document(document: Document) -> None:
    """Erase what answers and citations kept of `document`'s text (nothing is kept yet)."""
