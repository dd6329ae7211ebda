"""The Celery app. Its configuration lives in ragsite/celeryconfig.py, read lazily on first use,
so importing the app costs nothing until a task is sent or a worker starts.
"""

from __future__ import annotations

import os

from celery import Celery

from ragsite import offline  # noqa: F401  (before any task module imports a library)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")

app = Celery("ragsite")
app.config_from_object("ragsite.celeryconfig")
app.autodiscover_tasks(["ingestion", "retrieval"])
