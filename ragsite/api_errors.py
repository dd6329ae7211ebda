"""Moved to core.api_errors; this name stays until the last callers are updated."""

from core.api_errors import *  # noqa: F403
