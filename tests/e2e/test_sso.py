"""Single sign-on in a real browser against a real OpenID Connect provider (npm's oidc-provider,
tests/oidc/provider.js) on loopback: a person signs in through the provider's own login and
consent pages, is created here with the groups the provider gives, and loses a collection at
the next sign-in once the provider drops the group. SSO-only mode shows no password form."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission, User
from playwright.sync_api import expect

from core import sso
from core.models import AuditEvent, SsoGroup, SsoIdentity
from tests.conftest import make_collection, require_or_skip, stop_worker
from tests.e2e.conftest import PASSWORD

pytestmark = pytest.mark.e2e

PROVIDER_DIR = Path(__file__).resolve().parent.parent / "oidc"
CLIENT_ID = "ragsite-test"
CLIENT_SECRET = "a-test-client-secret-of-some-length"
PROVIDER_NAME = "Test IdP"


class Provider:
    """The running provider: its issuer URL, and its accounts (a JSON file it reads at every
    token and userinfo request, so a change applies from the next sign-in)."""

    def __init__(self, issuer: str, accounts: Path):
        self.issuer = issuer
        self.accounts = accounts

    def set_account(self, sub: str, **claims) -> None:
        accounts = json.loads(self.accounts.read_text())
        accounts[sub] = claims
        self.accounts.write_text(json.dumps(accounts))


@pytest.fixture(scope="module")
def provider(live_server, tmp_path_factory) -> Iterator[Provider]:
    """oidc-provider on a loopback socket this process bound and hands over (LISTEN_FD), with one
    client whose redirect URI is the live server's callback."""
    node = shutil.which("node")
    if node is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        require_or_skip(
            "the test OpenID Connect provider is not installed: run `make oidc-provider` "
            "(npm ci in tests/oidc; needs Node.js and npm)"
        )
    folder = tmp_path_factory.mktemp("oidc")
    accounts = folder / "accounts.json"
    accounts.write_text("{}")
    log = folder / "provider.log"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    issuer = f"http://127.0.0.1:{listener.getsockname()[1]}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "ISSUER": issuer,
        "LISTEN_FD": str(listener.fileno()),
        "ACCOUNTS_FILE": str(accounts),
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": CLIENT_SECRET,
        "REDIRECT_URI": f"{live_server.url}/accounts/oidc/callback/",
        "GROUPS_CLAIM": "groups",
    }
    with listener:
        process = subprocess.Popen(
            [node, "provider.js"],
            cwd=PROVIDER_DIR,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=[listener.fileno()],
        )
    deadline = time.monotonic() + 30
    while "ready" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_worker(process)
            raise AssertionError(f"oidc-provider did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    yield Provider(issuer, accounts)
    stop_worker(process)


@pytest.fixture
def sso_settings(settings, provider) -> Provider:
    """ragsite pointed at the provider (endpoints by discovery, as most sites will configure it)."""
    settings.RAG_OIDC_ISSUER = provider.issuer
    settings.RAG_OIDC_CLIENT_ID = CLIENT_ID
    settings.RAG_OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.RAG_OIDC_PROVIDER_NAME = PROVIDER_NAME
    settings.RAG_OIDC_SCOPES = "openid email profile groups"
    settings.RAG_OIDC_GROUPS_CLAIM = "groups"
    sso.forget_discovery()
    yield provider
    sso.forget_discovery()


def readable_collections(page) -> set[str]:
    """What the signed-in browser session may read, asked of the API with its own cookies."""
    response = page.request.get("/api/v1/collections/")
    assert response.status == 200, response.text()
    return {row["name"] for row in response.json()["results"]}


def sign_in_with_provider(page, base_url: str, *, login: str | None) -> None:
    """From the sign-in page through the provider and back; `login` fills the provider's login
    and consent pages (None: the provider still knows the browser and sends it straight back)."""
    page.goto("/accounts/login/")
    page.get_by_role("link", name=f"Sign in with {PROVIDER_NAME}").click()
    if login is not None:
        page.locator("input[name=login]").fill(login)
        page.locator("input[name=password]").fill("anything")
        page.get_by_role("button", name="Sign-in").click()
        page.get_by_role("button", name="Continue").click()  # consent
    page.wait_for_url(lambda url: url.startswith(base_url) and "/accounts/" not in url)


def test_sso_creates_the_user_and_collection_access_follows_the_providers_groups(
    page, live_server, transactional_db, sso_settings
):
    # A local account with the same name and address: SSO must neither take it over nor reuse it.
    local_alice = User.objects.create_user("alice", "alice@example.org", PASSWORD)
    engineering = Group.objects.create(name="engineering")  # made by an admin, before any SSO
    staff_rights = Group.objects.create(name="console-staff")
    staff_rights.permissions.add(
        Permission.objects.get(content_type__app_label="ingestion", codename="add_document")
    )
    make_collection("Engineering handbook", groups=[engineering])
    make_collection("Staff notes", groups=[staff_rights])
    make_collection("Everyone's FAQ", everyone=True)
    sso_settings.set_account(
        "alice-sub-1",
        email="alice@example.org",
        preferred_username="alice",
        given_name="Alice",
        groups=["engineering", "console-staff", "design"],
    )

    sign_in_with_provider(page, live_server.url, login="alice-sub-1")

    identity = SsoIdentity.objects.select_related("user").get(subject="alice-sub-1")
    alice = identity.user
    assert identity.issuer == sso_settings.issuer
    assert alice != local_alice
    assert alice.username == "alice-2"
    assert not alice.has_usable_password()
    assert alice.first_name == "Alice"
    # Joined what the claim names; a group holding permissions stays local (not joined).
    assert set(alice.groups.values_list("name", flat=True)) == {"engineering", "design"}
    assert set(SsoGroup.objects.values_list("group__name", flat=True)) == {"engineering", "design"}
    assert readable_collections(page) == {"Engineering handbook", "Everyone's FAQ"}
    (session,) = [c for c in page.context.cookies() if c["name"] == "sessionid"]
    assert 11 * 3600 < session["expires"] - time.time() <= 12 * 3600  # RAG_OIDC_SESSION_HOURS
    first = AuditEvent.objects.get(action=AuditEvent.Action.SSO_SIGN_IN)
    assert first.user == alice
    assert first.via == "web"
    assert first.detail == {
        "created": True,
        "groups_added": ["design", "engineering"],
        "groups_removed": [],
        "groups_ignored": ["console-staff"],
    }

    # An admin adds Alice to a local group by hand; the provider drops "engineering".
    alice.groups.add(Group.objects.create(name="reviewers"))
    sso_settings.set_account(
        "alice-sub-1", email="alice@example.org", preferred_username="alice", groups=["design"]
    )
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/accounts/login/")
    sign_in_with_provider(page, live_server.url, login=None)

    assert set(alice.groups.values_list("name", flat=True)) == {"design", "reviewers"}
    assert readable_collections(page) == {"Everyone's FAQ"}
    assert User.objects.filter(sso_identity__isnull=False).count() == 1  # the same user again
    again = AuditEvent.objects.filter(action=AuditEvent.Action.SSO_SIGN_IN).first()
    assert again.detail["created"] is False
    assert again.detail["groups_removed"] == ["engineering"]
    local_alice.refresh_from_db()
    assert local_alice.groups.count() == 0
    assert local_alice.check_password(PASSWORD)
    assert page.events.console_errors == []


def test_sso_only_mode_shows_no_password_form(page, transactional_db, sso_settings, settings):
    settings.RAG_SSO_ONLY = True
    page.goto("/accounts/login/")
    expect(page.get_by_role("link", name=f"Sign in with {PROVIDER_NAME}")).to_be_visible()
    expect(page.get_by_label("Password")).to_have_count(0)
    expect(page.get_by_label("Username")).to_have_count(0)
