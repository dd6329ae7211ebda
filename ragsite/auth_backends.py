"""Login rate limiting: django-axes' lockout check, first among the authentication backends.

Axes needs the HTTP request to know who is knocking; a sign-in without one (a management
command, the test client's login()) is not a web login, so there is nothing to rate-limit.
"""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend
from django.http import HttpRequest


class LoginRateLimitBackend(AxesStandaloneBackend):
    """AxesStandaloneBackend that steps aside (returns None) when called without a request."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs,
    ):
        if request is None:
            return None  # not a web sign-in: let the next backend decide, count nothing
        return super().authenticate(request, username=username, password=password, **kwargs)
