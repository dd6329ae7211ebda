"""SSO without a browser: how the groups claim is read and applied, which local groups it may not
touch, the user names new SSO users get, the ID token checks mozilla-django-oidc leaves to us,
password sign-in in SSO-only mode, and a provider that is down or outside the egress rules.
(The whole flow against a real provider: tests/e2e/test_sso.py.)"""

from __future__ import annotations

import time

import jwt
import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.exceptions import SuspiciousOperation

from core import sso
from core.models import SsoGroup, SsoIdentity

ISSUER = "https://idp.example.org/realms/staff"
CLIENT_ID = "ragsite"
SECRET = "a-client-secret-long-enough-for-hs256-keys"


@pytest.fixture
def oidc(settings):
    settings.RAG_OIDC_ISSUER = ISSUER
    settings.RAG_OIDC_CLIENT_ID = CLIENT_ID
    settings.RAG_OIDC_CLIENT_SECRET = SECRET
    settings.RAG_OIDC_GROUPS_CLAIM = "groups"
    sso.forget_discovery()
    yield settings
    sso.forget_discovery()


def names(user: User) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


def test_the_claim_is_read_as_a_list_a_string_or_a_dotted_path(oidc):
    assert sso.group_names({"groups": ["a", " b ", "a", "", 7]}) == ["a", "b"]
    assert sso.group_names({"groups": "solo"}) == ["solo"]
    assert sso.group_names({}) == []  # missing: no groups, so access fails closed
    assert sso.group_names({"groups": ["x" * 151, "ok"]}) == ["ok"]
    oidc.RAG_OIDC_GROUPS_CLAIM = "realm_access.roles"
    assert sso.group_names({"realm_access": {"roles": ["r1", "r2"]}}) == ["r1", "r2"]
    # A claim whose own name has dots (Auth0's namespaced claims) is taken whole first.
    oidc.RAG_OIDC_GROUPS_CLAIM = "https://example.org/groups"
    assert sso.group_names({"https://example.org/groups": ["g"]}) == ["g"]


def test_the_sync_joins_and_leaves_only_the_providers_groups(db):
    user = User.objects.create_user("sso-user")
    local = Group.objects.create(name="reviewers")  # given by hand, never named by a claim
    admins = Group.objects.create(name="console-staff")
    admins.permissions.add(Permission.objects.get(codename="add_document"))
    user.groups.add(local)

    first = sso.sync_groups(user, ["engineering", "console-staff"])
    assert (first.added, first.removed, first.ignored) == (["engineering"], [], ["console-staff"])
    assert names(user) == {"reviewers", "engineering"}
    assert set(SsoGroup.objects.values_list("group__name", flat=True)) == {"engineering"}

    # An admin puts the user into the permission group by hand: the claim neither adds nor
    # removes it, whatever it says.
    user.groups.add(admins)
    second = sso.sync_groups(user, ["design"])
    assert (second.added, second.removed) == (["design"], ["engineering"])
    assert names(user) == {"reviewers", "console-staff", "design"}

    third = sso.sync_groups(user, [])
    assert third.removed == ["design"]
    assert names(user) == {"reviewers", "console-staff"}


def test_new_sso_users_never_take_a_local_name(db):
    User.objects.create_user("alice")
    User.objects.create_user("alice-2")
    assert sso.new_username({"sub": "1", "preferred_username": "Alice"}) == "Alice-3"
    assert sso.new_username({"sub": "1", "email": "bob smith@example.org"}) == (
        "bob-smith@example.org"
    )
    assert sso.new_username({"sub": "f81d4fae"}) == "sso-f81d4fae"


def id_token(**claims) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": CLIENT_ID, "sub": "u1", "nonce": "n", "iat": now}
    payload |= {"exp": now + 60} | claims
    return jwt.encode(payload, SECRET, algorithm="HS256")


def test_id_tokens_from_another_issuer_or_for_another_client_are_refused(oidc):
    oidc.RAG_OIDC_SIGN_ALGO = "HS256"
    backend = sso.OidcBackend()
    backend.OIDC_RP_SIGN_ALGO = "HS256"
    backend.OIDC_RP_CLIENT_SECRET = SECRET
    backend.OIDC_RP_IDP_SIGN_KEY = None
    assert backend.verify_token(id_token(), nonce="n")["sub"] == "u1"
    with pytest.raises(SuspiciousOperation, match="issuer"):
        backend.verify_token(id_token(iss="https://evil.example.org"), nonce="n")
    with pytest.raises(SuspiciousOperation, match="not issued to this client"):
        backend.verify_token(id_token(aud="another-app"), nonce="n")
    with pytest.raises(SuspiciousOperation, match="authorized party"):
        backend.verify_token(id_token(aud=[CLIENT_ID, "another-app"]), nonce="n")
    with pytest.raises(SuspiciousOperation, match="Nonce"):
        backend.verify_token(id_token(), nonce="replayed")
    with pytest.raises(jwt.ExpiredSignatureError):
        backend.verify_token(id_token(exp=int(time.time()) - 120), nonce="n")


@pytest.mark.parametrize("sso_only", [False, True])
def test_sso_only_refuses_passwords_except_superusers(client, db, oidc, sso_only):
    oidc.RAG_SSO_ONLY = sso_only
    User.objects.create_user("staff", password="a-long-test-password")
    User.objects.create_superuser("root", password="a-long-test-password")

    page = client.get("/accounts/login/").content.decode()
    assert "Sign in with single sign-on" in page
    assert ('name="password"' in page) is not sso_only

    refused = client.post(
        "/accounts/login/", {"username": "staff", "password": "a-long-test-password"}
    )
    assert (refused.status_code == 200) is sso_only  # the form again, not a redirect
    assert ("_auth_user_id" in client.session) is not sso_only
    client.logout()
    admitted = client.post(
        "/admin/login/", {"username": "root", "password": "a-long-test-password", "next": "/"}
    )
    assert admitted.status_code == 302
    assert "_auth_user_id" in client.session


def test_a_provider_outside_the_egress_rules_is_never_contacted(client, db, oidc):
    # idp.example.org is neither loopback nor on RAG_ALLOWED_HOSTS_EGRESS: refused before any
    # lookup (the suite's egress guard would fail this test on one).
    response = client.get("/accounts/oidc/authenticate/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    page = client.get("/accounts/login/").content.decode()
    assert "did not work" in page
    with pytest.raises(sso.SsoUnavailable, match="RAG_ALLOWED_HOSTS_EGRESS"):
        sso.endpoints()


def test_a_provider_that_is_down_stops_only_the_sso_sign_in(client, db, oidc, refused_port):
    oidc.RAG_OIDC_ISSUER = f"http://127.0.0.1:{refused_port}"
    assert client.get("/accounts/login/").status_code == 200  # nothing asked of the provider
    response = client.get("/accounts/oidc/authenticate/")
    assert response["Location"] == "/accounts/login/"
    with pytest.raises(sso.SsoUnavailable, match="did not answer"):
        sso.endpoints()


def test_without_an_issuer_the_sso_pages_do_not_exist(client, db, settings):
    settings.RAG_OIDC_ISSUER = ""
    assert client.get("/accounts/oidc/authenticate/").status_code == 404
    assert "Sign in with" not in client.get("/accounts/login/").content.decode()


def test_the_admin_lists_sso_identities_and_managed_groups(admin_client, db):
    user = User.objects.create_user("sso-user")
    sso.sync_groups(user, ["engineering"])
    SsoIdentity.objects.create(user=user, issuer=ISSUER, subject="f81d4fae")
    identities = admin_client.get("/admin/core/ssoidentity/").content.decode()
    assert "f81d4fae" in identities
    assert "engineering" in admin_client.get("/admin/core/ssogroup/").content.decode()
