"""What every API view shares: pagination and the per-key rate limits.

Named in settings.REST_FRAMEWORK, so each view gets them without asking.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from retrieval.models import ApiKey


class ApiPagination(PageNumberPagination):
    """?page=N&page_size=M; every list view orders by a unique column last, so pages are stable."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class ApiRateThrottle(SimpleRateThrottle):
    """Counts requests per API key (each key its own budget), else per signed-in user.

    The rate is read from settings on every request, so it can be changed without a restart of
    the class (and overridden in tests)."""

    scope = "api"
    setting = "RAG_API_RATE"

    def get_rate(self) -> str | None:
        return getattr(settings, self.setting, "") or None

    def get_cache_key(self, request: Request, view) -> str:
        if isinstance(request.auth, ApiKey):
            ident = f"key-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"ip-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class AskRateThrottle(ApiRateThrottle):
    """Answers run the model: a smaller budget, on top of the general one."""

    scope = "ask"
    setting = "RAG_ASK_RATE"
