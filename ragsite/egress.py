"""Moved to core.egress; this name stays until the last callers are updated."""

from core.egress import *  # noqa: F403
