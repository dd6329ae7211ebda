"""DRF authentication by API key: `Authorization: Bearer rsk_…` acts as the key's user.

Also describes the scheme to drf-spectacular, so the OpenAPI schema documents it.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from core import apikeys
from core.models import ApiKey


class BearerApiKeyAuthentication(BaseAuthentication):
    """`request.user` is the key's user, `request.auth` the ApiKey row (throttles key on it)."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None  # not ours: let session authentication try
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: expected 'Bearer <key>'."
            )
        try:
            plaintext = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        key = apikeys.verify_key(plaintext)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        apikeys.record_use(key, request._request)
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (with WWW-Authenticate) rather than 403 when no credentials came.
        return f'{self.keyword} realm="api"'


class BearerApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = BearerApiKeyAuthentication
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API key (rsk_…), created under 'API keys' in the web UI.",
        }
