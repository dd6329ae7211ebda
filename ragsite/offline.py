"""Switches every library we use to offline, telemetry-free mode.

Imported by ragsite/__init__.py, so it runs before Django, Celery, unstructured or Hugging Face
code is imported in any entry point (manage.py, the Celery worker, the ASGI server).
"""

import os

from core.egress import OFFLINE_ENV  # the switches; core, so that checks can read them too


def apply() -> None:
    """Set the offline switches; a value the operator set explicitly is forced back on."""
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value


apply()

if os.environ.get("RAG_EGRESS_GUARD") == "1":
    # Set by the test suite for the processes it starts; see core/egress.py.
    from core import egress

    egress.install()
