"""The API keys page of the web UI: a key is shown once and only its hash kept, revoking stops it
at once, nobody sees or revokes another user's keys, and key administrators act for users."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from core import apikeys
from core.models import ApiKey, AuditEvent
from tests.keys import key_user

KEYS = "/keys/"
SHOWN_KEY = re.compile(r'id="new-key-value"[^>]*value="(rsk_[^"]+)"')


@pytest.fixture
def other_user(db) -> User:
    return User.objects.create_user("other", password="a-long-test-password")


@pytest.fixture
def key_admin(db) -> User:
    """Staff, not superuser, allowed to change API keys in the admin."""
    admin = User.objects.create_user("keyadmin", password="a-long-test-password", is_staff=True)
    admin.user_permissions.add(Permission.objects.get(codename="change_apikey"))
    return User.objects.get(pk=admin.pk)  # fresh: permissions are cached per instance


def signed_in(user: User, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def create(client: Client, name: str, url: str = KEYS) -> tuple[object, str]:
    """POST the form; returns the response and the key the page shows."""
    response = client.post(url, {"name": name})
    assert response.status_code == 200, response.content[:500]
    found = SHOWN_KEY.search(response.content.decode())
    assert found, "the new key should be on the page"
    return response, found.group(1)


def test_the_page_asks_anonymous_visitors_to_sign_in(db):
    response = Client().get(KEYS)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_page_is_linked_from_the_top_bar_and_says_when_there_are_no_keys(user):
    response = signed_in(user).get(reverse("web:chat"))
    assert 'href="/keys/"' in response.content.decode()
    page = signed_in(user).get(KEYS).content.decode()
    assert 'data-state="no-keys"' in page
    assert 'aria-current="page">API keys<' in page


def test_a_new_key_is_shown_once_with_usage_and_only_its_hash_is_stored(user):
    client = signed_in(user)
    response, plaintext = create(client, "wiki bot")

    html = response.content.decode()
    assert "Authorization: Bearer &lt;key&gt;" in html
    assert 'href="/api/v1/docs/"' in html
    assert "no-store" in response["Cache-Control"]  # no cache may keep the page with the key
    key = ApiKey.objects.get(user=user)
    assert key.name == "wiki bot"
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest() != plaintext
    assert key.prefix == plaintext[: apikeys.PREFIX_LENGTH]
    assert key_user(plaintext) == user

    # Never again: not on the page, not in the session (no flash message), not in the audit log.
    later = client.get(KEYS).content.decode()
    assert plaintext not in later
    assert f"{key.prefix}…" in later
    assert "wiki bot" in later
    assert SHOWN_KEY.search(later) is None
    assert plaintext not in json.dumps(dict(client.session.items()), default=str)
    assert not any(plaintext in json.dumps(e.detail) for e in AuditEvent.objects.all())
    assert AuditEvent.objects.filter(action=AuditEvent.Action.API_KEY_CREATED, user=user).exists()


def test_a_key_needs_a_name(user):
    response = signed_in(user).post(KEYS, {"name": "   "})
    assert response.status_code == 400
    assert SHOWN_KEY.search(response.content.decode()) is None
    assert not ApiKey.objects.exists()


def test_the_list_shows_revoked_and_active_keys_with_last_use(user):
    old, old_plaintext = apikeys.create_key(user, "old script")
    apikeys.revoke_key(old)
    _, plaintext = apikeys.create_key(user, "report job")
    key_user(plaintext)  # records last use

    html = signed_in(user).get(KEYS).content.decode()
    old_row = re.search(rf'data-key-id="{old.pk}".*?</tr>', html, re.S).group(0)
    assert "Revoked" in old_row
    assert "Revoke…" not in old_row
    new_row = re.search(r'data-key-id="\d+"[^>]*>\s*<td[^>]*>report job.*?</tr>', html, re.S)
    assert new_row
    assert "Active" in new_row.group(0)
    assert "Never" not in new_row.group(0)
    assert old_plaintext not in html
    assert plaintext not in html


def test_revoking_a_key_stops_it_at_once(user):
    key, plaintext = apikeys.create_key(user, "wiki bot")
    client = signed_in(user)

    response = client.post(reverse("web:revoke_key", args=[key.pk]))

    assert response.status_code == 302
    assert response["Location"] == KEYS
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert key_user(plaintext) is None
    page = client.get(KEYS).content.decode()
    assert "revoked: it no longer works" in page
    assert AuditEvent.objects.filter(action=AuditEvent.Action.API_KEY_REVOKED).count() == 1
    # Again: nothing changes, and it says so.
    client.post(reverse("web:revoke_key", args=[key.pk]))
    assert AuditEvent.objects.filter(action=AuditEvent.Action.API_KEY_REVOKED).count() == 1


def test_another_users_keys_are_not_found(user, other_user):
    theirs, plaintext = apikeys.create_key(other_user, "their bot")
    client = signed_in(user)

    assert client.post(reverse("web:revoke_key", args=[theirs.pk])).status_code == 404
    assert key_user(plaintext) == other_user
    assert "their bot" not in client.get(KEYS).content.decode()
    # Asking for their page, or creating a key for them, is as if they did not exist.
    assert client.get(f"{KEYS}?user={other_user.pk}").status_code == 404
    assert client.post(f"{KEYS}?user={other_user.pk}", {"name": "sneaky"}).status_code == 404
    assert client.get(f"{KEYS}?user=999999").status_code == 404
    assert client.get(f"{KEYS}?user=abc").status_code == 404
    assert client.get(f"{KEYS}?user={'9' * 30}").status_code == 404  # beyond any integer column
    assert not ApiKey.objects.filter(name="sneaky").exists()
    # One's own id is just one's own page.
    assert client.get(f"{KEYS}?user={user.pk}").status_code == 200


def test_staff_without_the_key_permission_cannot_act_for_others(user, other_user):
    staff = User.objects.create_user("plainstaff", password="a-long-test-password", is_staff=True)
    apikeys.create_key(other_user, "their bot")
    client = signed_in(staff)
    assert client.get(f"{KEYS}?user={other_user.pk}").status_code == 404


def test_a_key_admin_creates_lists_and_revokes_a_users_keys(key_admin, user):
    mine, _ = apikeys.create_key(key_admin, "admin's own")
    theirs, their_plaintext = apikeys.create_key(user, "their bot")
    client = signed_in(key_admin)
    url = f"{KEYS}?user={user.pk}"

    page = client.get(url).content.decode()
    assert "API keys of staff" in page
    assert 'data-state="other-user"' in page
    assert "their bot" in page
    assert "admin&#x27;s own" not in page
    assert f'action="{KEYS}?user={user.pk}"' in page  # creating stays on their page

    _, plaintext = create(client, "made for staff", url)
    made = ApiKey.objects.get(name="made for staff")
    assert made.user == user
    assert key_user(plaintext) == user
    created = AuditEvent.objects.get(
        action=AuditEvent.Action.API_KEY_CREATED, detail__key_id=made.pk
    )
    assert created.user == key_admin
    assert created.detail["owner"] == "staff"

    response = client.post(reverse("web:revoke_key", args=[theirs.pk]))
    assert response["Location"] == url
    assert key_user(their_plaintext) is None
    revoked = AuditEvent.objects.get(action=AuditEvent.Action.API_KEY_REVOKED)
    assert revoked.user == key_admin
    mine.refresh_from_db()
    assert mine.revoked_at is None


def test_only_a_superuser_acts_for_a_superuser(key_admin, admin_user, user):
    """A key acts with its owner's rights: making one for a superuser would be a way up."""
    root_key, plaintext = apikeys.create_key(admin_user, "root bot")
    client = signed_in(key_admin)
    assert client.get(f"{KEYS}?user={admin_user.pk}").status_code == 404
    assert client.post(f"{KEYS}?user={admin_user.pk}", {"name": "up"}).status_code == 404
    assert client.post(reverse("web:revoke_key", args=[root_key.pk])).status_code == 404
    assert key_user(plaintext) == admin_user

    superuser = signed_in(admin_user)
    assert superuser.get(f"{KEYS}?user={key_admin.pk}").status_code == 200
    _, made = create(superuser, "for the key admin", f"{KEYS}?user={key_admin.pk}")
    assert key_user(made) == key_admin


def test_creating_and_revoking_need_the_csrf_token(user):
    key, plaintext = apikeys.create_key(user, "wiki bot")
    client = signed_in(user, enforce_csrf_checks=True)

    assert client.post(KEYS, {"name": "forged"}).status_code == 403
    assert client.post(reverse("web:revoke_key", args=[key.pk])).status_code == 403
    assert not ApiKey.objects.filter(name="forged").exists()
    assert key_user(plaintext) == user

    # With the page's token, both work.
    token = re.search(
        r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(KEYS).content.decode()
    )
    response = client.post(KEYS, {"name": "real", "csrfmiddlewaretoken": token.group(1)})
    assert response.status_code == 200
    assert SHOWN_KEY.search(response.content.decode())


def test_revoking_is_post_only(user):
    key, plaintext = apikeys.create_key(user, "wiki bot")
    assert signed_in(user).get(reverse("web:revoke_key", args=[key.pk])).status_code == 405
    assert key_user(plaintext) == user
