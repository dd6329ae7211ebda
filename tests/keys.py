"""What a presented API key acts as, decided the way the API decides it."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import RequestFactory
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from core.authentication import BearerApiKeyAuthentication


def key_user(plaintext: str) -> User | None:
    """The user a key acts for (its use recorded), or None for an unknown, revoked or inactive
    one: the API's bearer authentication, without a view around it."""
    request = Request(RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {plaintext}"))
    try:
        found = BearerApiKeyAuthentication().authenticate(request)
    except AuthenticationFailed:
        return None
    return found[0] if found else None
