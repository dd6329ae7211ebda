"""Per-user API keys: create (shown once), list, revoke, and check a presented key.

Only a SHA-256 of each key is stored; a key acts with exactly its user's permissions. Keys are
created and revoked from a signed-in session only (a key cannot make another key), and a user
has at most RAG_MAX_API_KEYS active ones.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from core import audit
from core.models import ApiKey, AuditEvent

KEY_PREFIX = "rsk_"  # recognisable in logs and by secret scanners
PREFIX_LENGTH = 12  # "rsk_" + 8 random characters, stored to tell keys apart in lists
# last_used_at is a hint for people, not a log: write it at most this often per key.
TOUCH_INTERVAL = timedelta(minutes=1)
# The audit log records a key's use at most this often, so busy tools do not flood it.
AUDIT_INTERVAL = timedelta(hours=1)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


class TooManyKeys(Exception):
    """The user already has settings.RAG_MAX_API_KEYS active keys."""


def max_keys() -> int:
    return settings.RAG_MAX_API_KEYS


def create_key(
    user: User,
    name: str,
    *,
    created_by: User | None = None,
    via: AuditEvent.Via = AuditEvent.Via.WEB,
    request: HttpRequest | None = None,
) -> tuple[ApiKey, str]:
    """A new key for `user`; returns the row and the plaintext key, which is never stored.

    `created_by` is the admin acting for the user, if not the user themselves (for the audit log).
    Raises TooManyKeys when the user has RAG_MAX_API_KEYS active keys already: each key is a way
    in, so their number stays small enough to keep track of.
    """
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        # The user's row is the lock: two requests at once cannot both take the last place.
        User.objects.select_for_update().filter(pk=user.pk).first()
        if keys_for(user).filter(revoked_at__isnull=True).count() >= max_keys():
            raise TooManyKeys(
                f"{user.get_username()} has {max_keys()} active API keys, the most allowed "
                "(RAG_MAX_API_KEYS). Revoke one that is no longer used first."
            )
        key = ApiKey.objects.create(
            user=user,
            name=name.strip()[:100] or "API key",
            prefix=plaintext[:PREFIX_LENGTH],
            key_hash=hash_key(plaintext),
        )
        audit.record(
            AuditEvent.Action.API_KEY_CREATED,
            user=created_by or user,
            via=via,
            detail={"key_id": key.pk, "prefix": key.prefix, "owner": user.get_username()},
            request=request,
        )
    return key, plaintext


def may_manage_keys_of(actor: User, owner: User) -> bool:
    """Whether `actor` may list, create and revoke `owner`'s keys. A key acts with its owner's
    permissions, so acting for someone else is for key administrators only, and a superuser's
    keys only for another superuser (anything less would be a way up to superuser)."""
    if actor.pk == owner.pk:
        return True
    if not (actor.is_active and actor.is_staff and actor.has_perm("core.change_apikey")):
        return False
    return actor.is_superuser or not owner.is_superuser


def keys_for(user: User) -> QuerySet[ApiKey]:
    """The user's own keys, newest first, revoked ones included (they show as revoked)."""
    return ApiKey.objects.filter(user=user).order_by("-created_at", "-id")


def revoke_key(
    key: ApiKey,
    *,
    revoked_by: User | None = None,
    via: AuditEvent.Via = AuditEvent.Via.WEB,
    request: HttpRequest | None = None,
) -> bool:
    """Revoke a key at once; returns False if it was already revoked."""
    with transaction.atomic():
        revoked = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if revoked:
            audit.record(
                AuditEvent.Action.API_KEY_REVOKED,
                user=revoked_by or key.user,
                via=via,
                detail={"key_id": key.pk, "prefix": key.prefix, "owner": key.user.get_username()},
                request=request,
            )
    key.refresh_from_db(fields=["revoked_at"])
    return bool(revoked)


def verify_key(plaintext: str) -> ApiKey | None:
    """The live key matching `plaintext`, if any, whose user is still active. No side effects.

    The row is found by its public prefix, and the hash compared in constant time, so response
    timing says nothing about how much of a guessed key was right.
    """
    if not plaintext.startswith(KEY_PREFIX) or len(plaintext) < PREFIX_LENGTH + 8:
        return None
    digest = hash_key(plaintext)
    candidates = ApiKey.objects.filter(
        prefix=plaintext[:PREFIX_LENGTH], revoked_at__isnull=True, user__is_active=True
    ).select_related("user")
    match = None
    for candidate in candidates:
        if hmac.compare_digest(candidate.key_hash, digest):
            match = candidate
    return match


def record_use(
    key: ApiKey, request: HttpRequest | None = None, *, via: AuditEvent.Via = AuditEvent.Via.API
) -> None:
    """Note that `key` was used (through `via`): last_used_at (at most once a minute), and the
    audit log (at most once an hour per key)."""
    now = timezone.now()
    touched = (
        ApiKey.objects.filter(pk=key.pk)
        .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - TOUCH_INTERVAL))
        .update(last_used_at=now)
    )
    if not touched:
        return
    key.last_used_at = now
    recently_audited = AuditEvent.objects.filter(
        action=AuditEvent.Action.API_KEY_USED,
        at__gte=now - AUDIT_INTERVAL,
        user=key.user,
        detail__key_id=key.pk,
    ).exists()
    if not recently_audited:
        audit.record(
            AuditEvent.Action.API_KEY_USED,
            user=key.user,
            via=via,
            detail={"key_id": key.pk, "prefix": key.prefix},
            request=request,
        )
