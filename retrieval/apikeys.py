"""Moved to core.apikeys; this name stays until the last callers are updated."""

from core.apikeys import *  # noqa: F403
