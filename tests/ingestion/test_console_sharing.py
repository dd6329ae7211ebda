"""Which models may read a collection (its sensitivity) and its default answer model, set in the
console and the admin by staff who manage it, audited with the before and after."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from core.models import AuditEvent
from ingestion.models import Collection
from tests.conftest import make_collection

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-test-password"
ENDPOINTS = [
    {
        "name": "local",
        "base_url": "http://127.0.0.1:9/v1",
        "roles": ["answer"],
        "location": "in_house",
    },
    {
        "name": "hosted",
        "base_url": "https://api.example.com/v1",
        "roles": ["answer"],
        "location": "external",
        "label": "Hosted model",
    },
]


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_user("editor", password=PASSWORD, is_staff=True, is_superuser=True)


@pytest.fixture
def configured(settings):
    settings.RAG_ALLOWED_HOSTS_EGRESS = ["api.example.com"]
    settings.RAG_MODEL_ENDPOINTS = json.dumps(ENDPOINTS)


def sharing_rows() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=AuditEvent.Action.COLLECTION_SHARING))


def test_a_new_collection_is_in_house_only_unless_staff_choose_otherwise(staff):
    client = signed_in(staff)
    url = reverse("console:create_collection")
    client.post(url, {"name": "Plain", "visibility": "restricted", "sensitivity": "in_house"})
    client.post(url, {"name": "Manuals", "visibility": "everyone", "sensitivity": "shareable"})

    assert Collection.objects.get(name="Plain").sensitivity == "in_house"
    assert Collection.objects.get(name="Manuals").sensitivity == "shareable"
    created = AuditEvent.objects.get(action="collection_created", detail__name="Manuals")
    assert created.detail["sensitivity"] == "shareable"
    # A collection made elsewhere (API, manage.py ingest, before this field) is in-house only.
    assert make_collection("Older").sensitivity == "in_house"


def test_staff_change_the_models_of_a_collection_and_it_is_audited(staff, configured):
    collection = make_collection("Policies")
    client = signed_in(staff)
    page = client.get(reverse("console:home") + f"?collection={collection.pk}").content.decode()
    assert "Models: In-house only" in page
    assert "Hosted model (external)" in page  # the configured endpoints are the choices

    response = client.post(
        reverse("console:sharing", args=[collection.pk]),
        {"sensitivity": "redacted", "default_model": "hosted"},
    )
    assert response.status_code == 302
    collection.refresh_from_db()
    assert (collection.sensitivity, collection.default_model) == ("redacted", "hosted")
    (row,) = sharing_rows()
    assert (row.user, row.via) == (staff, "web")
    assert row.detail == {
        "collection_id": collection.pk,
        "before": {"sensitivity": "in_house", "default_model": ""},
        "after": {"sensitivity": "redacted", "default_model": "hosted"},
    }
    # Saving the same again changes nothing and records nothing.
    client.post(
        reverse("console:sharing", args=[collection.pk]),
        {"sensitivity": "redacted", "default_model": "hosted"},
    )
    assert len(sharing_rows()) == 1


def test_an_unknown_sensitivity_or_model_is_not_saved(staff, configured):
    collection = make_collection("Policies")
    client = signed_in(staff)
    url = reverse("console:sharing", args=[collection.pk])
    client.post(url, {"sensitivity": "public", "default_model": ""})
    client.post(url, {"sensitivity": "shareable", "default_model": "gpt-unknown"})
    collection.refresh_from_db()
    assert (collection.sensitivity, collection.default_model) == ("in_house", "")
    assert sharing_rows() == []


def test_a_manager_who_is_not_staff_sees_no_form_and_may_not_loosen_it(db):
    manager = User.objects.create_user("manager", password=PASSWORD)
    collection = make_collection("Team notes", users=[manager])
    collection.managers.add(manager)
    client = signed_in(manager)
    page = client.get(reverse("console:home") + f"?collection={collection.pk}").content.decode()
    assert "Models: In-house only" in page
    assert reverse("console:sharing", args=[collection.pk]) not in page

    response = client.post(
        reverse("console:sharing", args=[collection.pk]),
        {"sensitivity": "shareable", "default_model": ""},
    )
    assert response.status_code == 403
    collection.refresh_from_db()
    assert collection.sensitivity == "in_house"


def test_staff_who_cannot_read_a_collection_cannot_change_it(db):
    other = User.objects.create_user("other-staff", password=PASSWORD, is_staff=True)
    collection = make_collection("Board minutes")
    response = signed_in(other).post(
        reverse("console:sharing", args=[collection.pk]),
        {"sensitivity": "shareable", "default_model": ""},
    )
    assert response.status_code == 404
    collection.refresh_from_db()
    assert collection.sensitivity == "in_house"


def test_a_change_in_the_admin_is_audited_too(staff):
    collection = make_collection("Handbook")
    client = signed_in(staff)
    url = reverse("admin:ingestion_collection_change", args=[collection.pk])
    response = client.post(
        url,
        {
            "name": "Handbook",
            "description": "",
            "visibility": "restricted",
            "sensitivity": "shareable",
            "default_model": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    collection.refresh_from_db()
    assert collection.sensitivity == "shareable"
    (row,) = sharing_rows()
    assert row.via == "admin"
    assert row.detail["before"]["sensitivity"] == "in_house"
    assert row.detail["after"]["sensitivity"] == "shareable"
