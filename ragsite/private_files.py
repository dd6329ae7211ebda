"""Moved to core.private_files; this name stays until the last callers are updated."""

from core.private_files import *  # noqa: F403
