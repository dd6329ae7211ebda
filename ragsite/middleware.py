"""The Content-Security-Policy header on every HTML page: the one place the policy is written.
Only our own files may run or style a page; the API docs page alone also allows inline code.

Also the request id (core.logs) every log line of a request carries, echoed as X-Request-ID.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

from core import logs

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; "
    "form-action 'self'"
)
# drf-spectacular's Swagger UI page starts the viewer with an inline script (it holds the request's
# CSRF token, so no fixed hash can allow it) and an inline <style>. That page shows our own schema
# and nothing from documents, so it alone may run inline code; everything else stays 'self'.
DOCS_POLICY = POLICY.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'").replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'"
)
DOCS_VIEW_NAMES = {"api-docs"}


def policy_for(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    return DOCS_POLICY if match is not None and match.view_name in DOCS_VIEW_NAMES else POLICY


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Adds the policy to HTML responses that do not set their own (sync and async alike)."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if "Content-Security-Policy" in response:
            return response
        if not response.get("Content-Type", "").startswith("text/html"):
            return response
        if settings.DEBUG and response.status_code >= 400:
            return response  # Django's debug error pages style and script themselves inline
        response["Content-Security-Policy"] = policy_for(request)
        return response


class RequestIdMiddleware(MiddlewareMixin):
    """Gives each request an id: the client's (or proxy's) X-Request-ID when sane, else a new
    one. It is set in core.logs' context variable, so every log line of the request carries it,
    down to search and the model call (the answer stream runs in a copy of this context), and
    the response echoes it. It stays set after the response: a streamed body is still being
    made then, and the next request in this context sets its own first thing."""

    def process_request(self, request: HttpRequest) -> None:
        request_id = logs.new_request_id(request.META.get("HTTP_X_REQUEST_ID"))
        request.request_id = request_id  # type: ignore[attr-defined]
        logs.request_id.set(request_id)

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        request_id = getattr(request, "request_id", None)
        if request_id:
            response["X-Request-ID"] = request_id
        return response
