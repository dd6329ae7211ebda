"""Moved to core.audit; this name stays until the last callers are updated."""

from core.audit import *  # noqa: F403
from core.audit import CSV_COLUMNS, QUESTION_KEYS, client_ip, record, write_csv  # noqa: F401
