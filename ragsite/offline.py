"""Switches every library we use to offline, telemetry-free mode.

Imported by ragsite/__init__.py, so it runs before Django, Celery, unstructured or Hugging Face
code is imported in any entry point (manage.py, the Celery worker, the ASGI server).
"""

import os

OFFLINE_ENV = {
    # unstructured pings a remote analytics endpoint at import unless one of these is set.
    "DO_NOT_TRACK": "1",
    "SCARF_NO_ANALYTICS": "true",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    # Hugging Face libraries: never reach the hub, never report usage.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply() -> None:
    """Set the offline switches; a value the operator set explicitly is forced back on."""
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value


apply()

if os.environ.get("RAG_EGRESS_GUARD") == "1":
    # Set by the test suite for the processes it starts; see core/egress.py.
    from core import egress

    egress.install()
