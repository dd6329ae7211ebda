"""Model routing, piece by piece: the endpoint configuration and its rule, who chooses the model
(API `model`, the OpenAI endpoint's `model`, a collection's default), what an answer says when
material was withheld, the disclosure ledger in the admin, privacy_check's routing table and
its exit codes, and retention of the ledger. The property test is test_routing_fuzz.py."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from core import endpoints
from core.endpoints import Endpoint
from ingestion.models import Collection
from retrieval import retention, routing
from retrieval.models import Disclosure, Message
from tests.routing_world import add_passages, port_of, stand_ins

__all__ = ["stand_ins"]  # a fixture

PAYROLL = "Salary payments are made on the 25th of each month, reference payroll-kwsecret."
POLICY = "Salary questions go to the public HR desk, reference policy-kwpublic."


@pytest.fixture
def world(db, stand_ins):
    """A reader of two collections about salaries: one in-house only, one shareable."""
    user = User.objects.create_user("reader")
    payroll = Collection.objects.create(name="Payroll", sensitivity="in_house")
    public = Collection.objects.create(name="Public policies", sensitivity="shareable")
    for collection, text in ((payroll, PAYROLL), (public, POLICY)):
        collection.reader_users.add(user)
        add_passages(collection, [("Salaries", "Payments", text)])
    client = APIClient()
    client.force_authenticate(user)
    local, hosted = stand_ins
    return {
        "user": user,
        "payroll": payroll,
        "public": public,
        "client": client,
        "local": local,
        "hosted": hosted,
    }


def sent_text(server) -> str:
    return json.dumps([r.body for r in server.chat_requests])


# --- configuration and the rule -----------------------------------------------------------------


def test_without_configuration_the_endpoints_are_todays_in_house_setup(settings):
    settings.RAG_MODEL_ENDPOINTS = ""
    settings.RAG_LLM_BASE_URL = "http://127.0.0.1:8000/v1"
    settings.RAG_EMBEDDING_URL = ""
    settings.RAG_RERANKER_URL = settings.RAG_RERANKER_MODEL = ""

    configured = endpoints.configured()

    assert [(e.name, e.location, sorted(e.roles)) for e in configured] == [
        ("llm", "in_house", ["answer", "rewrite"]),
        ("embedder", "in_house", ["embed"]),
    ]
    assert configured[0].base_urls == ("http://127.0.0.1:8000/v1",)


@pytest.mark.parametrize(
    ("location", "sensitivity", "verdict"),
    [
        ("in_house", "in_house", True),
        ("in_house", "redacted", True),
        ("in_house", "shareable", True),
        ("external", "in_house", False),
        ("external", "redacted", "redact"),
        ("external", "shareable", True),
        ("external", "something new", False),
    ],
)
def test_the_rule(location, sensitivity, verdict):
    endpoint = Endpoint("e", ("https://api.example.com/v1",), location=location)
    assert endpoints.may_receive(endpoint, sensitivity) == verdict


def test_an_external_endpoint_off_the_allow_list_is_refused_by_name(settings):
    settings.RAG_ALLOWED_HOSTS_EGRESS = []
    settings.RAG_MODEL_ENDPOINTS = json.dumps(
        [
            {
                "name": "big",
                "base_url": "http://127.0.0.1:9/v1",
                "roles": ["answer"],
                "location": "external",
            }
        ]
    )
    # Loopback does not count: an external endpoint must be listed itself.
    with pytest.raises(endpoints.EndpointConfigurationError, match=r"'big'.*not listed"):
        endpoints.configured()


@pytest.mark.parametrize("role", ["embed", "rerank"])
def test_embedding_and_reranking_stay_in_house(settings, role):
    settings.RAG_ALLOWED_HOSTS_EGRESS = ["api.example.com"]
    settings.RAG_MODEL_ENDPOINTS = json.dumps(
        [
            {
                "name": "cloud",
                "base_url": "https://api.example.com/v1",
                "roles": [role],
                "location": "external",
            }
        ]
    )
    # Every collection's text goes through them: an external one is refused outright.
    with pytest.raises(endpoints.EndpointConfigurationError, match=f"the {role} role stays"):
        endpoints.configured()


def test_a_key_in_the_configuration_file_is_refused(settings, tmp_path):
    path = tmp_path / "endpoints.json"
    path.write_text(
        json.dumps(
            [
                {
                    "name": "x",
                    "base_url": "http://127.0.0.1:9/v1",
                    "roles": ["answer"],
                    "location": "in_house",
                    "api_key": "sk-123",
                }
            ]
        )
    )
    settings.RAG_MODEL_ENDPOINTS = str(path)  # a path works like the JSON itself
    with pytest.raises(endpoints.EndpointConfigurationError, match="api_key_env"):
        endpoints.configured()


# --- who chooses, and what the answer says --------------------------------------------------------


def test_the_api_answers_with_the_model_asked_for_sending_it_only_what_it_may_receive(world):
    response = world["client"].post(
        "/api/v1/ask", {"question": "When are salaries paid?", "model": "hosted"}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert "policy-kwpublic" in sent_text(world["hosted"])
    assert "payroll-kwsecret" not in sent_text(world["hosted"])
    assert world["local"].chat_requests == []
    assert body["answer"].startswith("Hosted answer")
    assert (
        "1 passage from collections that may not be sent to Hosted model (external) was not used"
        in body["answer"]
    )
    assert "Local model" in body["answer"]  # which model could use it
    rows = Disclosure.objects.filter(message_id=body["message"])
    assert [(r.endpoint, r.location, r.collection_id, r.sensitivity) for r in rows] == [
        ("hosted", "external", world["public"].pk, "shareable")
    ]
    assert Message.objects.get(pk=body["message"]).generator.startswith("hosted")


def test_without_a_choice_the_in_house_default_answers_with_everything(world):
    response = world["client"].post(
        "/api/v1/ask", {"question": "When are salaries paid?"}, format="json"
    )

    assert response.status_code == 200
    assert "payroll-kwsecret" in sent_text(world["local"])
    assert world["hosted"].chat_requests == []
    assert "Note:" not in response.json()["answer"]


def test_when_nothing_may_go_nothing_is_sent_and_the_answer_says_so(world):
    world["payroll"].default_model = "hosted"  # the collection's default is an external model
    world["payroll"].save()

    response = world["client"].post(
        "/api/v1/ask",
        {"question": "When are salaries paid?", "collection": world["payroll"].pk},
        format="json",
    )

    assert response.status_code == 200
    assert world["hosted"].chat_requests == []
    assert world["local"].chat_requests == []
    assert (
        "may not be sent to Hosted model (external), so nothing was sent"
        in (response.json()["answer"])
    )
    assert not Disclosure.objects.exists()


def test_an_unknown_model_is_a_clear_400(world):
    response = world["client"].post(
        "/api/v1/ask", {"question": "When are salaries paid?", "model": "gpt-5"}, format="json"
    )

    assert response.status_code == 400
    assert "No model named 'gpt-5'" in json.dumps(response.json())
    assert "local, hosted" in json.dumps(response.json())


def test_no_silent_fallback_when_the_chosen_model_is_down(world):
    world["hosted"].failure = "500"

    response = world["client"].post(
        "/api/v1/ask", {"question": "When are salaries paid?", "model": "hosted"}, format="json"
    )

    assert response.status_code == 503  # the model failed before its first token
    assert "unavailable" in response.json()["error"]["message"]
    assert world["local"].chat_requests == []  # never answered by another model instead


def test_the_openai_endpoint_lists_and_takes_endpoints_as_models(world):
    listed = world["client"].get("/api/v1/openai/models").json()
    assert [m["id"] for m in listed["data"]] == ["ragsite", "local", "hosted"]

    completion = world["client"].post(
        "/api/v1/openai/chat/completions",
        {"model": "hosted", "messages": [{"role": "user", "content": "When are salaries paid?"}]},
        format="json",
    )

    assert completion.status_code == 200, completion.content
    assert completion.json()["model"] == "hosted"
    assert "policy-kwpublic" in sent_text(world["hosted"])
    assert "payroll-kwsecret" not in sent_text(world["hosted"])
    missing = world["client"].post(
        "/api/v1/openai/chat/completions",
        {"model": "nope", "messages": [{"role": "user", "content": "When are salaries paid?"}]},
        format="json",
    )
    assert missing.json()["error"]["code"] == "model_not_found"


# --- the ledger in the admin, retention ---------------------------------------------------------


def test_admins_see_the_ledger_per_answer_and_export_it(world):
    answered = world["client"].post(
        "/api/v1/ask", {"question": "When are salaries paid?", "model": "hosted"}, format="json"
    )
    message_id = answered.json()["message"]
    admin = User.objects.create_superuser("boss", "boss@example.org", "a-long-test-password")
    browser = Client()
    browser.force_login(admin)

    page = browser.get(f"/admin/retrieval/message/{message_id}/change/").content.decode()
    exported = browser.get("/admin/retrieval/disclosure/export/?location__exact=external")

    assert "Sent to models (disclosure ledger)" in page
    assert "hosted (127.0.0.1)" in page
    lines = exported.content.decode().strip().splitlines()
    assert lines[0].startswith("at,user,message_id,endpoint,host,location,role,chunk_id")
    assert len(lines) == 2
    assert ",reader," in lines[1]
    assert ",external,answer," in lines[1]


def test_retention_purges_old_ledger_rows(db, settings):
    settings.RAG_RETENTION_DAYS = 30
    old, new = Disclosure.objects.bulk_create(
        [
            Disclosure(endpoint="e", location="external", role="answer", sensitivity="shareable")
            for _ in range(2)
        ]
    )
    Disclosure.objects.filter(pk=old.pk).update(at=timezone.now() - timedelta(days=31))

    result = retention.purge_expired()

    assert result.disclosures == 1
    assert list(Disclosure.objects.values_list("pk", flat=True)) == [new.pk]


# --- privacy_check ------------------------------------------------------------------------------


def test_privacy_check_prints_the_routing_table(world):
    out = StringIO()
    call_command("privacy_check", stdout=out)

    text = out.getvalue()
    assert "Payroll (in_house): answer: local; rewrite: local;" in text
    assert "Public policies (shareable): answer: local, hosted; rewrite: local, hosted;" in text


def test_privacy_check_fails_on_an_in_house_endpoint_at_a_public_address(world, settings):
    settings.RAG_ALLOWED_HOSTS_EGRESS = [*settings.RAG_ALLOWED_HOSTS_EGRESS, "8.8.8.8"]
    settings.RAG_MODEL_ENDPOINTS = json.dumps(
        [
            {
                "name": "sneaky",
                "base_url": "http://8.8.8.8/v1",
                "roles": ["answer"],
                "location": "in_house",
            }
        ]
    )
    with pytest.raises(CommandError, match="sneaky is declared in_house"):
        call_command("privacy_check", stdout=StringIO())


def test_privacy_check_fails_on_an_unusable_configuration(world, settings):
    settings.RAG_ALLOWED_HOSTS_EGRESS = [f"127.0.0.1:{port_of(world['local'])}"]  # not hosted's
    with pytest.raises(CommandError, match=r"'hosted'.*not listed"):
        call_command("privacy_check", stdout=StringIO())


def test_a_redacted_collection_reaches_the_external_model_without_names_and_the_reader_sees_them(
    world,
):
    if routing.new_redactor() is None:
        pytest.fail("retrieval.redaction is not available")
    world["public"].sensitivity = "redacted"
    world["public"].save()
    add_passages(
        world["public"],
        [("Contacts", "HR", "Salary questions go to John Smith, john.smith@example.org.")],
    )
    # The stand-in answers with the placeholders it was given, as a model quoting them would.
    world["hosted"].answer = lambda body: (
        "Ask " + " ".join(sorted(set(re.findall(r"<[A-Z_]+_\d+>", json.dumps(body))))) + " [1]"
    )

    response = world["client"].post(
        "/api/v1/ask",
        {"question": "Who answers salary questions?", "model": "hosted"},
        format="json",
    )

    sent = sent_text(world["hosted"])
    assert "John Smith" not in sent
    assert "john.smith@example.org" not in sent
    assert "<PERSON_" in sent
    answer = response.json()["answer"]
    assert "John Smith" in answer  # placeholders put back for the reader
    assert "john.smith@example.org" in answer
    assert set(
        Disclosure.objects.filter(collection_id=world["public"].pk).values_list(
            "redacted", flat=True
        )
    ) == {True}
