"""Production settings pass Django's deployment checks; sign-in is rate limited without getting in
the way of API keys or tests; passwords are validated; responses carry the security headers."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError

from core import apikeys

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "a-long-test-password"
PRODUCTION = {
    "DJANGO_SECURE": "1",
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "rag.example.org",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://rag.example.org",
}


def deploy_check(extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DJANGO_") or key == "DJANGO_SETTINGS_MODULE"
    }
    env.update(extra_env)
    # The checks need no database; a DATABASE_URL keeps the settings from starting the embedded one.
    env["DATABASE_URL"] = "postgresql://nobody@/unused?host=/nonexistent"
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_production_settings_pass_check_deploy_without_a_single_warning():
    result = deploy_check(PRODUCTION)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues (0 silenced)." in output
    assert "WARNINGS" not in output


def test_development_defaults_stay_easy_and_are_what_check_deploy_warns_about():
    result = deploy_check({})

    output = result.stdout + result.stderr
    # Plain HTTP on a laptop works (no SSL redirect, no secure-only cookies)...
    assert "security.W008" in output
    assert "security.W012" in output
    # ...which is exactly why the check above would fail if production forgot DJANGO_SECURE.
    assert result.returncode != 0


# --- sign-in rate limiting -----------------------------------------------------------------------


def login(client, username: str, password: str, address: str = "10.0.0.7"):
    return client.post(
        "/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address
    )


@pytest.mark.django_db
def test_repeated_failed_sign_ins_lock_the_account_from_that_address(client, user, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "staff", "wrong password").status_code == 200  # the form again

    locked = login(client, "staff", "wrong password")
    even_right = login(client, "staff", PASSWORD)

    assert locked.status_code == 429
    assert even_right.status_code == 429
    assert "_auth_user_id" not in client.session
    assert AccessAttempt.objects.filter(username="staff").exists()


@pytest.mark.django_db
def test_a_lockout_does_not_lock_the_user_out_from_elsewhere_or_others_out(
    client, user, admin_user, settings
):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, "staff", "wrong password")

    from_elsewhere = login(client, "staff", PASSWORD, address="10.0.0.8")
    client.logout()
    colleague = login(client, "admin", PASSWORD)

    assert from_elsewhere.status_code == 302
    assert colleague.status_code == 302


@pytest.mark.django_db
def test_a_successful_sign_in_resets_the_failure_count(client, user, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, "staff", "wrong password")
    assert login(client, "staff", PASSWORD).status_code == 302
    client.logout()

    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, "staff", "wrong password")

    assert login(client, "staff", PASSWORD).status_code == 302


@pytest.mark.django_db
def test_api_keys_keep_working_for_a_locked_out_user(client, user, settings):
    _, plaintext = apikeys.create_key(user, "tool")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, "staff", "wrong password")

    response = client.get(
        "/api/v1/collections/", HTTP_AUTHORIZATION=f"Bearer {plaintext}", REMOTE_ADDR="10.0.0.7"
    )

    assert response.status_code == 200


@pytest.mark.django_db
def test_the_test_clients_login_still_works(client, user):
    assert client.login(username="staff", password=PASSWORD)
    assert not client.login(username="staff", password="wrong password")


# --- passwords and headers -----------------------------------------------------------------------


@pytest.mark.parametrize("password", ["password", "12345678901", "short"])
def test_weak_passwords_are_refused(password):
    with pytest.raises(ValidationError):
        validate_password(password)


@pytest.mark.django_db
def test_pages_carry_the_security_headers(client):
    response = client.get("/accounts/login/")

    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
