"""What every app shares: per-user API keys, the audit log, and who signs in through SSO.

Both tables were created by the retrieval app (their names say so); they moved here so that
ingestion can audit its actions and authenticate keys without importing retrieval.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiKey(models.Model):
    """A per-user API key. Only a hash is stored; the key is shown once, at creation."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True)  # shown in lists to tell keys apart
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class AuditEvent(models.Model):
    """Who did what, when: questions asked, documents cited, uploaded, deleted, downloaded."""

    class Action(models.TextChoices):
        ASK = "ask", "Asked a question"
        SEARCH = "search", "Searched"
        UPLOAD = "upload", "Uploaded a document"
        DELETE = "delete", "Deleted a document"
        DOWNLOAD = "download", "Downloaded a document"
        REINGEST = "reingest", "Re-ingested documents"
        API_KEY_CREATED = "api_key_created", "Created an API key"
        API_KEY_REVOKED = "api_key_revoked", "Revoked an API key"
        API_KEY_USED = "api_key_used", "Used an API key"
        COLLECTION_CREATED = "collection_created", "Created a collection"
        AUDIT_EXPORT = "audit_export", "Exported the audit log"
        SSO_SIGN_IN = "sso_sign_in", "Signed in through SSO"
        COLLECTION_SHARING = "collection_sharing", "Changed which models may read a collection"

    class Via(models.TextChoices):
        """The entry point an action came through."""

        WEB = "web", "Web UI"
        API = "api", "REST API"
        MCP = "mcp", "MCP server"
        ADMIN = "admin", "Django admin"
        CLI = "cli", "manage.py"
        SYSTEM = "system", "ragsite itself"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True)  # kept when the user is deleted
    action = models.CharField(max_length=30, choices=Action.choices, db_index=True)
    via = models.CharField(max_length=20, choices=Via.choices, blank=True)
    question = models.TextField(blank=True)  # empty when RAG_AUDIT_QUESTIONS is off
    document_ids = models.JSONField(default=list, blank=True)  # documents cited, uploaded, deleted
    detail = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.username} {self.action}"


class SsoIdentity(models.Model):
    """The identity provider's account a user signs in with (OpenID Connect issuer + subject).

    SSO users are found by this pair only, never by e-mail or user name: an account at the
    identity provider cannot take over a local account that happens to share its address."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identity"
    )
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="core_sso_identity_unique")
        ]
        verbose_name = "SSO identity"
        verbose_name_plural = "SSO identities"

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class SsoGroup(models.Model):
    """A Django group the identity provider manages (core.sso): one its groups claim has named.
    At every SSO sign-in a user joins the managed groups the claim names and leaves those it no
    longer names; groups without this mark are local and never touched by the sync."""

    group = models.OneToOneField(
        "auth.Group", on_delete=models.CASCADE, primary_key=True, related_name="sso"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "group managed by SSO"
        verbose_name_plural = "groups managed by SSO"

    def __str__(self) -> str:
        return self.group.name
