"""The sign-in pages: the login page (password form and/or "Sign in with …"), and the two steps of
the OpenID Connect code flow (mozilla-django-oidc's views, failing with a message, not a 500).

Mounted by ragsite/urls.py: `accounts/login/` and `accounts/oidc/`.
"""

from __future__ import annotations

import logging

import jwt
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.views.generic import View
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from core import sso

logger = logging.getLogger(__name__)


class LoginView(auth_views.LoginView):
    """Django's sign-in page, telling the template whether SSO is on and whether it is the only
    way in (then the password form is not shown; core.sso.SsoOnlyGate refuses the POST)."""

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["sso"] = sso.enabled()
        context["sso_only"] = sso.sso_only()
        context["sso_name"] = sso.provider_name()
        return context


def _failed(request: HttpRequest, reason: str) -> HttpResponse:
    logger.warning("SSO sign-in failed: %s", reason)
    messages.error(
        request, f"Signing in with {sso.provider_name()} did not work. Please try again later."
    )
    return HttpResponseRedirect(reverse("login"))


class SignInView(OIDCAuthenticationRequestView):
    """Step 1: off to the provider's authorization endpoint (state, nonce, PKCE in the session)."""

    get_settings = staticmethod(sso.oidc_setting)

    def __init__(self, **kwargs):
        # The parent reads the endpoint here, at every request; we read it in get(), where a
        # provider that cannot be reached becomes a message instead of an error page.
        View.__init__(self, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not sso.enabled():
            raise Http404("Single sign-on is not configured.")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = sso.endpoints().authorization
        except sso.SsoUnavailable as exc:
            return _failed(request, str(exc))
        self.OIDC_RP_CLIENT_ID = sso.oidc_setting("OIDC_RP_CLIENT_ID")
        return super().get(request)


class CallbackView(OIDCAuthenticationCallbackView):
    """Step 2: the provider sends the browser back with a code; the backend (core.sso.OidcBackend)
    exchanges it, checks the tokens, finds or creates the user and syncs the groups."""

    get_settings = staticmethod(sso.oidc_setting)

    @property
    def failure_url(self) -> str:
        return reverse("login")

    def login_success(self) -> HttpResponse:
        response = super().login_success()
        # Groups are synced at sign-in: a bounded session is how a group the provider removed
        # stops granting access within RAG_OIDC_SESSION_HOURS even for someone who never signs out.
        self.request.session.set_expiry(int(settings.RAG_OIDC_SESSION_HOURS * 3600))
        return response

    def get(self, request: HttpRequest) -> HttpResponse:
        if not sso.enabled():
            raise Http404("Single sign-on is not configured.")
        try:
            response = super().get(request)
        except (sso.SsoUnavailable, SuspiciousOperation, jwt.InvalidTokenError) as exc:
            return _failed(request, str(exc))
        if not request.user.is_authenticated:
            reason = request.GET.get("error") or "refused"
            return _failed(request, f"no user signed in ({reason[:100]})")
        return response


urlpatterns = [
    path("authenticate/", SignInView.as_view(), name="oidc_authentication_init"),
    path("callback/", CallbackView.as_view(), name="oidc_authentication_callback"),
]
