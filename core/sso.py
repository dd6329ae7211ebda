"""Single sign-on through OpenID Connect (mozilla-django-oidc's code flow, PKCE and nonce) next to
the local accounts: who an SSO user is, which groups the identity provider gives them, how
password sign-in behaves in SSO-only mode, and every call to the provider (through the egress rules).

Users are found by issuer + subject (core.models.SsoIdentity) and created at their first sign-in.
The groups claim (RAG_OIDC_GROUPS_CLAIM) is applied at every sign-in: the user joins the groups it
names and leaves the provider's groups it no longer names (`sync_groups`), so collection access
follows the provider. Local groups are protected, see `sync_groups`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core import checks
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.db import transaction
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings

from core import audit, egress, model_http
from core.models import SsoGroup, SsoIdentity

logger = logging.getLogger(__name__)

# Bounds on what a provider may send: group names are Django's 150 characters; a claim of
# thousands of groups is a misconfiguration, not a person.
MAX_GROUPS = 500
GROUP_NAME_MAX = 150
USERNAME_MAX = 150
# Characters Django's user name validator allows; anything else becomes "-". Linear.
USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")


class SsoUnavailable(Exception):
    """The identity provider could not be asked (down, refused by the egress rules, a bad
    answer): the sign-in fails with a message, the rest of the site keeps working."""


def enabled() -> bool:
    return bool(settings.RAG_OIDC_ISSUER and settings.RAG_OIDC_CLIENT_ID)


def sso_only() -> bool:
    return bool(settings.RAG_SSO_ONLY)


def provider_name() -> str:
    return settings.RAG_OIDC_PROVIDER_NAME or "single sign-on"


# --- talking to the provider --------------------------------------------------------------------


def fetch(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One back-channel request to the provider: only to a URL the egress rules allow (loopback,
    or a host on RAG_ALLOWED_HOSTS_EGRESS), through the model traffic's client (no proxy from the
    environment, the connected address checked against the allowed networks)."""
    if not egress.endpoint_allowed(url, settings.RAG_ALLOWED_HOSTS_EGRESS):
        host = urlsplit(url).hostname or url
        raise SsoUnavailable(
            f"the identity provider's host {host} is not on RAG_ALLOWED_HOSTS_EGRESS; "
            "nothing was sent"
        )
    try:
        with model_http.model_client(settings.RAG_OIDC_TIMEOUT) as client:
            return client.request(method, url, **kwargs)
    except (httpx.HTTPError, model_http.EgressRefused) as exc:
        raise SsoUnavailable(f"the identity provider did not answer: {exc}") from exc


@dataclass(frozen=True)
class Endpoints:
    authorization: str
    token: str
    userinfo: str
    jwks: str


_discovered: dict[str, dict] = {}
_discovery_lock = threading.Lock()


def endpoints() -> Endpoints:
    """The provider's endpoints: those set in the environment, the rest from the issuer's
    discovery document, fetched at the first sign-in (never at startup: a provider that is down
    must not stop the site) and kept for the life of the process once it was read."""
    explicit = {
        "authorization": settings.RAG_OIDC_AUTHORIZATION_ENDPOINT,
        "token": settings.RAG_OIDC_TOKEN_ENDPOINT,
        "userinfo": settings.RAG_OIDC_USERINFO_ENDPOINT,
        "jwks": settings.RAG_OIDC_JWKS_ENDPOINT,
    }
    if all(explicit.values()):
        return Endpoints(**explicit)
    document = discovery_document(settings.RAG_OIDC_ISSUER)
    keys = {
        "authorization": "authorization_endpoint",
        "token": "token_endpoint",
        "userinfo": "userinfo_endpoint",
        "jwks": "jwks_uri",
    }
    found = {name: explicit[name] or document.get(key) or "" for name, key in keys.items()}
    missing = [
        keys[name] for name, value in found.items() if not isinstance(value, str) or not value
    ]
    if missing:
        raise SsoUnavailable(f"the discovery document names no {', '.join(missing)}")
    return Endpoints(**found)


def discovery_document(issuer: str) -> dict:
    with _discovery_lock:
        if issuer in _discovered:
            return _discovered[issuer]
    response = fetch("GET", issuer.rstrip("/") + "/.well-known/openid-configuration")
    if response.status_code != 200:
        raise SsoUnavailable(f"discovery answered {response.status_code}")
    try:
        document = response.json()
    except ValueError as exc:
        raise SsoUnavailable("discovery did not answer JSON") from exc
    # OpenID Connect Discovery 1.0, 4.3: the document must name the issuer it was asked for.
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        raise SsoUnavailable("the discovery document names another issuer than RAG_OIDC_ISSUER")
    with _discovery_lock:
        _discovered[issuer] = document
    return document


def forget_discovery() -> None:
    """Read the discovery document again at the next sign-in (tests, a changed provider)."""
    with _discovery_lock:
        _discovered.clear()


def oidc_setting(attr: str, *default: Any) -> Any:
    """mozilla-django-oidc's settings, derived from ours (README: SSO); endpoints come from
    `endpoints()`, not from here."""
    ours: dict[str, Any] = {
        "OIDC_RP_CLIENT_ID": settings.RAG_OIDC_CLIENT_ID,
        "OIDC_RP_CLIENT_SECRET": settings.RAG_OIDC_CLIENT_SECRET,
        "OIDC_RP_SIGN_ALGO": settings.RAG_OIDC_SIGN_ALGO,
        "OIDC_RP_SCOPES": settings.RAG_OIDC_SCOPES,
        # client_secret_basic (the standard's default) unless the provider wants the secret posted
        "OIDC_TOKEN_USE_BASIC_AUTH": not settings.RAG_OIDC_TOKEN_AUTH.endswith("_post"),
        "OIDC_USE_NONCE": True,
        "OIDC_USE_PKCE": True,
        "OIDC_CREATE_USER": True,
        "OIDC_STORE_ACCESS_TOKEN": False,
        "OIDC_STORE_ID_TOKEN": False,
        "OIDC_ALLOW_UNSECURED_JWT": False,
        "OIDC_VERIFY_KID": True,
        "OIDC_AUTHENTICATION_CALLBACK_URL": "oidc_authentication_callback",
    }
    if attr in ours:
        return ours[attr]
    return import_from_settings(attr, *default)


# --- who signs in ---------------------------------------------------------------------------------


@dataclass
class GroupChanges:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # named by the claim, but local


def group_names(claims: dict) -> list[str]:
    """The group names the claim gives, in order, without duplicates. A missing claim is no
    groups (the user leaves every group the provider manages: access fails closed). The claim may
    be a list or a single string; a dotted name reaches into an object ("realm_access.roles")
    when no claim has the whole name."""
    name = settings.RAG_OIDC_GROUPS_CLAIM
    value: Any = claims.get(name)
    if value is None and "." in name:
        value = claims
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        if value is not None:
            logger.warning("SSO: the %s claim is neither a list nor a string: ignored", name)
        return []
    names: list[str] = []
    for item in value[:MAX_GROUPS]:
        if not isinstance(item, str) or not item.strip():
            continue
        item = item.strip()
        if len(item) > GROUP_NAME_MAX:
            logger.warning("SSO: a group name longer than %d characters: ignored", GROUP_NAME_MAX)
            continue
        if item not in names:
            names.append(item)
    return names


def sync_groups(user, names: Iterable[str]) -> GroupChanges:
    """Make the user's provider-managed groups exactly the claim's: join those it names (a group
    that does not exist yet is created), leave the managed ones it no longer names.

    Which groups the provider manages: every group a groups claim has named (marked by an
    SsoGroup row, kept once made). Local groups are protected two ways: a group the claim never
    named is never left, so memberships given by hand in the admin stay; and a group that holds
    Django permissions is never joined or left through the claim (ignored), so the provider cannot
    hand out staff rights, which are given in ragsite only."""
    changes = GroupChanges()
    wanted: list[Group] = []
    for name in names:
        group, _ = Group.objects.get_or_create(name=name)
        if group.permissions.exists():
            changes.ignored.append(name)
            continue
        SsoGroup.objects.get_or_create(group=group)
        wanted.append(group)
    current = set(
        user.groups.filter(sso__isnull=False, permissions__isnull=True).values_list("pk", flat=True)
    )
    wanted_ids = {group.pk for group in wanted}
    join = [group for group in wanted if group.pk not in current]
    leave = list(Group.objects.filter(pk__in=current - wanted_ids).order_by("name"))
    if join:
        user.groups.add(*join)
    if leave:
        user.groups.remove(*leave)
    changes.added = sorted(group.name for group in join)
    changes.removed = [group.name for group in leave]
    if changes.ignored:
        logger.warning(
            "SSO: the groups claim names groups that hold permissions, kept local: %s",
            ", ".join(changes.ignored),
        )
    return changes


def new_username(claims: dict) -> str:
    """A free user name for a new SSO user: preferred_username, else the e-mail address, else
    sso-<subject>, made valid, and numbered when a local account already has it."""
    candidates = [claims.get("preferred_username"), claims.get("email"), f"sso-{claims['sub']}"]
    base = next(
        (USERNAME_UNSAFE.sub("-", c.strip())[: USERNAME_MAX - 8] for c in candidates if _text(c)),
        "sso-user",
    )
    User = get_user_model()
    taken = set(
        User.objects.filter(username__iregex=rf"^{re.escape(base)}(-[0-9]+)?$").values_list(
            "username", flat=True
        )
    )
    taken = {name.lower() for name in taken}
    if base.lower() not in taken:
        return base
    number = 2
    while f"{base}-{number}".lower() in taken:
        number += 1
    return f"{base}-{number}"


def _text(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())


class OidcBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend, with: settings and endpoints resolved at sign-in (Django
    builds a backend for every request that loads a session user, and that must never wait for
    the provider); every back-channel call through `fetch`; the ID token's issuer and audience
    checked; users found by issuer + subject; groups synced at every sign-in; the sign-in audited."""

    get_settings = staticmethod(oidc_setting)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.UserModel = get_user_model()

    def authenticate(self, request, **kwargs: Any):
        if request is None or not enabled() or "nonce" not in kwargs:
            return None  # not the OIDC callback (a password form, a test client login)
        found = endpoints()
        self.OIDC_OP_TOKEN_ENDPOINT = found.token
        self.OIDC_OP_USER_ENDPOINT = found.userinfo
        self.OIDC_OP_JWKS_ENDPOINT = found.jwks
        self.OIDC_RP_CLIENT_ID = settings.RAG_OIDC_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.RAG_OIDC_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.RAG_OIDC_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None
        return super().authenticate(request, **kwargs)

    # The three back-channel calls, as mozilla-django-oidc makes them but through `fetch`.
    def get_token(self, payload: dict) -> dict:
        payload = dict(payload)
        auth = None
        if self.get_settings("OIDC_TOKEN_USE_BASIC_AUTH", False):
            auth = (payload["client_id"], payload.pop("client_secret"))
        response = fetch("POST", self.OIDC_OP_TOKEN_ENDPOINT, data=payload, auth=auth)
        if response.status_code != 200:
            raise SsoUnavailable(f"the token endpoint answered {response.status_code}")
        return _json(response, "the token endpoint")

    def retrieve_matching_jwk(self, token: str):
        import jwt

        response = fetch("GET", self.OIDC_OP_JWKS_ENDPOINT)
        if response.status_code != 200:
            raise SsoUnavailable(f"the JWKS endpoint answered {response.status_code}")
        keys = _json(response, "the JWKS endpoint").get("keys") or []
        header = jwt.get_unverified_header(token)
        for key in keys:
            if not isinstance(key, dict) or key.get("kid") != header.get("kid"):
                continue
            if "alg" in key and key["alg"] != header.get("alg"):
                continue
            return jwt.PyJWK(key)
        raise SuspiciousOperation("No key of the provider's JWKS signed this token.")

    def get_userinfo(self, access_token: str, id_token: str, payload: dict) -> dict:
        """The userinfo endpoint's claims over the ID token's (some providers put the groups in
        one, some in the other). Its subject must be the ID token's (OpenID Connect Core 5.3.2)."""
        response = fetch(
            "GET", self.OIDC_OP_USER_ENDPOINT, headers={"Authorization": f"Bearer {access_token}"}
        )
        if response.status_code != 200:
            raise SsoUnavailable(f"the userinfo endpoint answered {response.status_code}")
        content_type = response.headers.get("content-type", "").lower()
        if content_type.startswith("application/jwt"):
            userinfo = self.verify_token(response.text)
        else:
            userinfo = _json(response, "the userinfo endpoint")
        if userinfo.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("The userinfo subject is not the ID token's.")
        return {**payload, **userinfo}

    def verify_token(self, token: str, **kwargs: Any) -> dict:
        """Signature, expiry and nonce (mozilla-django-oidc), then what it leaves out: the token
        was issued by our issuer, to us (OpenID Connect Core 3.1.3.7)."""
        claims = super().verify_token(token, **kwargs)
        if claims.get("iss") != settings.RAG_OIDC_ISSUER:
            raise SuspiciousOperation("The token's issuer is not RAG_OIDC_ISSUER.")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        client_id = settings.RAG_OIDC_CLIENT_ID
        if client_id not in audiences:
            raise SuspiciousOperation("The token was not issued to this client.")
        if len(audiences) > 1 and claims.get("azp") != client_id:
            raise SuspiciousOperation("The token's authorized party is not this client.")
        return claims

    def verify_claims(self, claims: dict) -> bool:
        return _text(claims.get("sub"))

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict):
        claims = self.get_userinfo(access_token, id_token, payload)
        if not self.verify_claims(claims):
            raise SuspiciousOperation("The provider sent no subject.")
        issuer = settings.RAG_OIDC_ISSUER
        with transaction.atomic():
            identity = (
                SsoIdentity.objects.select_for_update()
                .select_related("user")
                .filter(issuer=issuer, subject=claims["sub"])
                .first()
            )
            created = identity is None
            if identity is None:
                user = self.UserModel.objects.create_user(new_username(claims))  # no password
                SsoIdentity.objects.create(user=user, issuer=issuer, subject=claims["sub"])
            else:
                user = identity.user
                if not user.is_active:
                    logger.info("SSO: %s is deactivated here; sign-in refused", user.username)
                    return None
            self.update_user(user, claims)
            changes = sync_groups(user, group_names(claims))
            audit.record(
                audit.Action.SSO_SIGN_IN,
                user=user,
                via=audit.Via.WEB,
                request=self.request,
                detail={
                    "created": created,
                    "groups_added": changes.added,
                    "groups_removed": changes.removed,
                    "groups_ignored": changes.ignored,
                },
            )
        return user

    def update_user(self, user, claims: dict):
        """Name and address follow the provider (shown in the admin; never used to match)."""
        values = {
            "email": claims.get("email"),
            "first_name": claims.get("given_name"),
            "last_name": claims.get("family_name"),
        }
        changed = []
        for name, value in values.items():
            if _text(value):
                value = value.strip()[: user._meta.get_field(name).max_length]
                if getattr(user, name) != value:
                    setattr(user, name, value)
                    changed.append(name)
        if changed:
            user.save(update_fields=changed)
        return user

    def get_user(self, user_id):
        user = super().get_user(user_id)
        return user if user is not None and user.is_active else None


def _json(response: httpx.Response, what: str) -> dict:
    try:
        value = response.json()
    except ValueError as exc:
        raise SsoUnavailable(f"{what} did not answer JSON") from exc
    if not isinstance(value, dict):
        raise SsoUnavailable(f"{what} did not answer a JSON object")
    return value


class SsoOnlyGate:
    """Under RAG_SSO_ONLY, placed before Django's ModelBackend: a password sign-in of anyone but
    a superuser (the way in while the provider is down) is refused before the password is looked
    at; everyone else signs in through the provider. Otherwise it steps aside. (A gate rather
    than a replacement of ModelBackend: sessions name their backend, and those signed in with a
    password stay valid. No get_user: Django's test client and session loading pass it by.)"""

    def authenticate(self, request, username=None, password=None, **kwargs: Any):
        if not sso_only() or password is None:
            return None
        User = get_user_model()
        username = username if username is not None else kwargs.get(User.USERNAME_FIELD)
        superuser = User._default_manager.filter(
            **{User.USERNAME_FIELD: username}, is_superuser=True
        ).exists()
        if not superuser:
            logger.info("SSO only: a password sign-in as %r refused", str(username)[:150])
            raise PermissionDenied("Password sign-in is off: sign in through SSO.")
        return None


@checks.register(checks.Tags.security)
def check_sso_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    problems: list[checks.CheckMessage] = []
    if sso_only() and not enabled():
        problems.append(
            checks.Warning(
                "RAG_SSO_ONLY is set but SSO is not configured (RAG_OIDC_ISSUER, "
                "RAG_OIDC_CLIENT_ID): only superusers can sign in.",
                id="ragsite.W101",
            )
        )
    if enabled() and not settings.RAG_OIDC_CLIENT_SECRET:
        problems.append(checks.Warning("RAG_OIDC_CLIENT_SECRET is empty.", id="ragsite.W102"))
    return problems
