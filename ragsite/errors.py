"""One overload told apart from a server error: every database connection of this process is in
use and none came free within RAG_DB_POOL_TIMEOUT seconds. That is not a bug but a full house, so
the client gets 503 with Retry-After (and the API its JSON error shape) instead of a 500.

The middleware answers it for a view (the usual place: the first query of a request); the 500
handler for the rest (a query in a middleware). Anything else stays Django's own 500."""

from __future__ import annotations

import logging
import sys

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from django.views.defaults import server_error as django_server_error
from psycopg_pool import PoolTimeout

from core.api_errors import error_body

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
MESSAGE = "The server is busy (every database connection is in use); try again in a few seconds."
# Where clients expect the API's JSON error body rather than a page.
JSON_PREFIXES = ("/api/", "/v1/", "/mcp")


def is_pool_exhausted(exc: BaseException | None) -> bool:
    """Django wraps the pool's PoolTimeout in its own OperationalError."""
    while exc is not None:
        if isinstance(exc, PoolTimeout):
            return True
        if not isinstance(exc, OperationalError):
            return False
        exc = exc.__cause__
    return False


def busy_response(request: HttpRequest) -> HttpResponse:
    response: HttpResponse
    if request.path.startswith(JSON_PREFIXES):
        response = JsonResponse(error_body("busy", MESSAGE), status=503)
    else:
        response = HttpResponse(MESSAGE, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class DatabaseBusyMiddleware(MiddlewareMixin):
    """A view that could not get a database connection in time answers 503, not 500 (and, being
    an answer rather than an error, logs one line, not a traceback)."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if is_pool_exhausted(exception):
            logger.warning("no database connection free within the pool timeout: 503")
            return busy_response(request)
        return None


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: Django calls it while handling the exception, so sys.exc_info() holds it."""
    if is_pool_exhausted(sys.exc_info()[1]):
        return busy_response(request)
    return django_server_error(request)
