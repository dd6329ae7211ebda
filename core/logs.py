"""Structured logs: the request id every log line of a request carries, and JSON lines.

ragsite.middleware.RequestIdMiddleware sets `request_id` for each web request (the client's
X-Request-ID when sane, else a new one). It is a context variable, so it follows the request
into the threads Django and asgiref run its code in (sync_to_async copies the context), the
answer stream included. `RequestIdFilter` (on the console handler, settings.LOGGING) puts it on
every record; `JsonFormatter` writes one JSON object per line when RAG_LOG_FORMAT=json.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime

NO_REQUEST = "-"
request_id: ContextVar[str] = ContextVar("request_id", default=NO_REQUEST)

# What a client's X-Request-ID may be to be kept (a proxy's UUID, a trace id): anything else,
# log-injection attempts included, is replaced by one of ours.
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def new_request_id(offered: str | None = None) -> str:
    """`offered` when it is a sane id, else a fresh random one."""
    if offered and _SANE.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id`: the current request's id, "-" outside a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


# Attributes every LogRecord has: whatever else a record carries came from `extra=` and is kept.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id,
    process, the exception when there is one, and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id.get(),
            "process": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value if isinstance(value, str | int | float | bool) else repr(value)
        return json.dumps(entry, ensure_ascii=False)
