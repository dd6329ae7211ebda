"""What every API view shares: pagination and the per-user rate limits.

Named in settings.REST_FRAMEWORK, so each view gets them without asking.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle


class ApiPagination(PageNumberPagination):
    """?page=N&page_size=M; every list view orders by a unique column last, so pages are stable."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class ApiRateThrottle(SimpleRateThrottle):
    """Counts requests per user: all of a user's API keys and their browser session share one
    budget, so more keys do not buy more requests. Anonymous requests count per address.

    The rate is read from settings on every request, so it can be changed without a restart of
    the class (and overridden in tests). Counters live in the default cache: shared by all
    processes with Redis, per process without (see CACHES in settings)."""

    scope = "api"
    setting = "RAG_API_RATE"

    def get_rate(self) -> str | None:
        return getattr(settings, self.setting, "") or None

    def get_cache_key(self, request: Request | HttpRequest, view) -> str:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            ident = f"user-{user.pk}"
        else:
            ident = f"ip-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class AskRateThrottle(ApiRateThrottle):
    """Answers run the model: a smaller budget, on top of the general one, shared with the web
    page's answers (retrieval.web.chat.ask)."""

    scope = "ask"
    setting = "RAG_ASK_RATE"


class EventStreamRenderer(BaseRenderer):
    """Lets a request to a streaming view say `Accept: text/event-stream`, as SSE clients do.

    The events themselves go out as a StreamingHttpResponse, not through a renderer; what else
    such a request gets (an error, a `stream: false` answer) is JSON, see EventStreamAccepted."""

    media_type = "text/event-stream"
    format = "sse"

    def render(self, data: Any, accepted_media_type=None, renderer_context=None) -> bytes:
        return JSONRenderer().render(data, "application/json", renderer_context)


class EventStreamAccepted:
    """Mixin for APIViews that stream: `Accept: text/event-stream` is acceptable (not a 406), and
    a plain response to such a request is sent as application/json."""

    renderer_classes = [*api_settings.DEFAULT_RENDERER_CLASSES, EventStreamRenderer]

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any):
        if isinstance(response, Response) and isinstance(
            getattr(request, "accepted_renderer", None), EventStreamRenderer
        ):
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
