"""Moved to core.authentication; this name stays until the last callers are updated."""

from core.authentication import *  # noqa: F403
