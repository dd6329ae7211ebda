"""ragsite: private question answering over an organisation's documents.

The offline switches must be set before any library is imported, hence the first import.
"""

from ragsite import offline  # noqa: F401  (side effect: telemetry off, hub offline)
from ragsite.celery import app as celery_app

__all__ = ("celery_app",)
