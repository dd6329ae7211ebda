"""The Celery app. Its configuration lives in ragsite/celeryconfig.py, read lazily on first use,
so importing the app costs nothing until a task is sent or a worker starts.

A worker started directly (`celery -A ragsite worker`, or by `make run`) prepares its data dir
and database (ragsite.bootstrap) as it starts, before its first task connects; importing this
module, which every import of the ragsite package does, prepares nothing.
"""

from __future__ import annotations

import os

from celery import Celery, signals

from ragsite import offline  # noqa: F401  (before any task module imports a library)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")

app = Celery("ragsite")
app.config_from_object("ragsite.celeryconfig")
app.autodiscover_tasks(["ingestion", "retrieval"])


@signals.celeryd_init.connect
def _prepare_worker(**kwargs) -> None:
    """In the worker's main process, before its pool forks: the pool processes inherit the
    database settings, and the main process holds the embedded server while it runs."""
    from ragsite import bootstrap

    bootstrap.prepare()


@signals.beat_init.connect
def _prepare_beat(**kwargs) -> None:
    """A scheduler alone keeps its schedule file under the data dir and needs no database."""
    from ragsite import bootstrap

    bootstrap.prepare(database=False)
