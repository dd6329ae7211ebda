"""Moved to core.model_http; this name stays until the last callers are updated."""

from core.model_http import *  # noqa: F403
