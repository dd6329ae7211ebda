"""Login rate limiting: django-axes' lockout check, first among the authentication backends.

Axes locks a user name from one address (AXES_LOCKOUT_PARAMETERS), so a stranger cannot lock a
colleague out from everywhere; on top of that, a user name is locked from every address once it
has RAG_LOGIN_USER_FAILURE_LIMIT (a higher number) recent failures in all, so guesses spread over
many addresses stop too. Axes has one failure limit for all its parameters, hence this check.

Axes needs the HTTP request to know who is knocking; a sign-in without one (a management
command, the test client's login()) is not a web login, so there is nothing to rate-limit.
"""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend
from axes.exceptions import AxesBackendPermissionDenied
from axes.helpers import get_cool_off, get_lockout_message
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Sum
from django.http import HttpRequest
from django.utils import timezone


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
        super().authenticate(request, username=username, password=password, **kwargs)
        if settings.AXES_ENABLED and username and recent_failures(username) >= user_limit():
            # The middleware answers a request marked locked out with the lockout page (429).
            request.axes_locked_out = True
            kwargs.get("response_context", {})["error"] = get_lockout_message()
            raise AxesBackendPermissionDenied("Too many failed sign-ins for this user name.")
        return None


def user_limit() -> int:
    return settings.RAG_LOGIN_USER_FAILURE_LIMIT


def recent_failures(username: str) -> int:
    """Failed sign-ins for `username` from every address within the cool-off time."""
    attempts = AccessAttempt.objects.filter(username=username)
    cool_off = get_cool_off()
    if cool_off is not None:
        attempts = attempts.filter(attempt_time__gte=timezone.now() - cool_off)
    return attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
