"""The staff web UI through Django's test client: sign-in, the streamed answer, conversations,
sources and downloads, and who may see what. The browser tests are in tests/e2e/."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from core.models import AuditEvent
from ingestion.models import Document
from retrieval.models import Citation, Conversation, Message
from tests.conftest import make_collection
from tests.documents import write_markdown, write_pdf, write_text

DEEP_COPY = "How do I make a deep copy of a nested list?"
# In a PDF, so the text reaches the chunks literally (no HTML or Markdown parsing on the way).
XSS_PAGES = [
    (
        "Quokka gateway",
        "The Quokka gateway escapes <script>alert(1)</script> in every page it serves. "
        "See [x](javascript:alert(1)) for the Quokka gateway escaping rules.",
    )
]


@pytest.fixture(autouse=True)
def extractive(settings):
    settings.RAG_LLM_BASE_URL = ""


@pytest.fixture
def other_user(db) -> User:
    return User.objects.create_user("other", password="a-long-test-password")


def signed_in(user: User, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def events_of(response) -> list[tuple[str, dict]]:
    body = b"".join(response.streaming_content).decode()
    events = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def ask(client: Client, question: str, **fields) -> list[tuple[str, dict]]:
    response = client.post(
        reverse("web:ask"), {"question": question, **fields}, HTTP_ACCEPT="text/event-stream"
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    return events_of(response)


# --- pages and states ------------------------------------------------------------------------
def test_the_chat_page_asks_anonymous_visitors_to_sign_in(db):
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_login_page_has_labelled_fields_and_signs_in(user):
    client = Client()
    page = client.get("/accounts/login/").content.decode()
    assert '<label for="id_username">' in page
    assert '<label for="id_password">' in page

    response = client.post(
        "/accounts/login/", {"username": "staff", "password": "a-long-test-password"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_the_chat_page_says_when_there_are_no_documents_yet(user):
    page = signed_in(user).get("/").content.decode()
    assert 'data-state="no-documents"' in page
    assert "No documents yet" in page


def test_the_chat_page_says_how_many_documents_are_still_being_ingested(user, tmp_path):
    from ingestion import services

    collection = make_collection("Busy", everyone=True)
    for index in range(2):
        path = write_text(tmp_path / f"n{index}.txt", f"Note number {index} about gardens.")
        services.register_path(collection, path, enqueue=False)

    page = signed_in(user).get("/").content.decode()
    assert "Ingestion is still running for 2 documents" in page


def test_the_collection_picker_offers_only_readable_collections(user, other_user):
    make_collection("Open handbook", everyone=True)
    make_collection("Board minutes", users=[other_user])

    page = signed_in(user).get("/").content.decode()
    assert "Open handbook" in page
    assert "Board minutes" not in page


# --- asking ----------------------------------------------------------------------------------
def test_an_answer_streams_as_events_and_its_sources_open(dev_corpus, user):
    client = signed_in(user)
    events = ask(client, DEEP_COPY)

    kinds = [kind for kind, _ in events]
    assert kinds[0] == "meta"
    assert kinds[-1] == "done"
    assert kinds.count("token") >= 2, "the answer arrives in pieces"
    text = "".join(data["text"] for kind, data in events if kind == "token")
    assert "deepcopy" in text
    meta = events[0][1]
    conversation = Conversation.objects.get(pk=meta["conversation_id"])
    assert conversation.user == user
    citations = next(data["citations"] for kind, data in events if kind == "citations")
    assert citations
    assert all(c["url"].startswith(f"/m/{meta['message_id']}/sources/") for c in citations)

    # The finished answer, rendered by the server: sanitised HTML with numbered source links.
    fragment = client.get(events[-1][1]["fragment_url"]).content.decode()
    assert 'class="cite"' in fragment
    assert "deepcopy" in fragment

    source = client.get(citations[0]["url"]).content.decode()
    assert "<mark>" in source
    assert dev_corpus["copy.html"].original_name in source
    assert reverse("web:download", args=[dev_corpus["copy.html"].pk]) in source


def test_a_follow_up_stays_in_the_same_conversation(dev_corpus, user):
    client = signed_in(user)
    first = ask(client, DEEP_COPY)
    conversation_id = first[0][1]["conversation_id"]
    second = ask(client, "And a shallow copy?", conversation=conversation_id)

    assert second[0][1]["conversation_id"] == conversation_id
    assert Message.objects.filter(conversation_id=conversation_id).count() == 4
    page = client.get(reverse("web:conversation", args=[conversation_id])).content.decode()
    assert "And a shallow copy?" in page


def test_without_script_the_form_post_answers_and_returns_to_the_conversation(dev_corpus, user):
    response = signed_in(user).post(reverse("web:ask"), {"question": DEEP_COPY})
    conversation = Conversation.objects.get(user=user)
    assert response.status_code == 302
    assert response["Location"] == reverse("web:conversation", args=[conversation.pk])


def test_an_empty_question_is_refused(user):
    response = signed_in(user).post(reverse("web:ask"), {"question": "   "})
    assert response.status_code == 400


def test_nothing_relevant_is_said_plainly(dev_corpus, user):
    client = signed_in(user)
    events = ask(client, "What is the boiling point of tungsten in kelvin?")
    assert events[-1] == (
        "done",
        {"outcome": "no_answer", "fragment_url": events[-1][1]["fragment_url"]},
    )
    fragment = client.get(events[-1][1]["fragment_url"]).content.decode()
    assert "Nothing relevant found" in fragment


def test_a_model_that_is_down_is_reported_not_hidden(dev_corpus, user, settings, refused_port):
    settings.RAG_LLM_BASE_URL = f"http://127.0.0.1:{refused_port}/v1"
    settings.RAG_LLM_MODEL = "any"
    client = signed_in(user)
    events = ask(client, DEEP_COPY)
    kind, data = events[-1]
    assert kind == "error"
    assert data["outcome"] == "model_unavailable"
    fragment = client.get(data["fragment_url"]).content.decode()
    assert "Model unavailable" in fragment


def test_asking_in_another_users_conversation_is_not_found(dev_corpus, user, other_user):
    theirs = Conversation.objects.create(user=other_user, title="Theirs")
    response = signed_in(user).post(
        reverse("web:ask"),
        {"question": DEEP_COPY, "conversation": theirs.pk},
        HTTP_ACCEPT="text/event-stream",
    )
    assert response.status_code == 404
    assert not theirs.messages.exists()


def test_asking_in_an_unreadable_collection_is_not_found(user, other_user):
    secret = make_collection("Board minutes", users=[other_user])
    response = signed_in(user).post(
        reverse("web:ask"), {"question": "Minutes?", "collection": secret.pk}
    )
    assert response.status_code == 404


def test_posts_without_a_csrf_token_are_refused(user):
    client = signed_in(user, enforce_csrf_checks=True)
    conversation = Conversation.objects.create(user=user, title="Mine")
    assert client.post(reverse("web:ask"), {"question": "Hello?"}).status_code == 403
    assert client.post(reverse("web:delete", args=[conversation.pk])).status_code == 403
    assert Conversation.objects.filter(pk=conversation.pk).exists()


# --- documents and models are escaped --------------------------------------------------------
def test_a_hostile_document_renders_as_text(user, ingest_file, tmp_path):
    collection = make_collection("Security", everyone=True)
    ingest_file(collection, write_pdf(tmp_path / "xss.pdf", XSS_PAGES))
    client = signed_in(user)
    events = ask(client, "How does the Quokka gateway escape pages?")
    assert events[-1][0] == "done"
    assert events[-1][1]["outcome"] == "answered"

    fragment = client.get(events[-1][1]["fragment_url"]).content.decode()
    assert "<script>" not in fragment
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in fragment
    assert 'href="javascript' not in fragment
    assert "href='javascript" not in fragment

    citations = next(data["citations"] for kind, data in events if kind == "citations")
    source = client.get(citations[0]["url"]).content.decode()
    assert "<script>alert" not in source
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in source


def test_a_hostile_document_name_is_escaped_in_titles(user, ingest_file, tmp_path):
    collection = make_collection("Names", everyone=True)
    path = write_markdown(
        tmp_path / "notes.md",
        "<img src=x onerror=alert(1)> Wombat notes",
        [("Wombats", "Wombats dig burrows with their claws.")],
    )
    ingest_file(collection, path)
    client = signed_in(user)
    events = ask(client, "How do wombats dig burrows?")
    conversation_id = events[0][1]["conversation_id"]
    page = client.get(reverse("web:conversation", args=[conversation_id])).content.decode()
    assert "<img src=x" not in page


# --- conversations ---------------------------------------------------------------------------
def test_a_user_cannot_open_rename_or_delete_another_users_conversation(user, other_user):
    theirs = Conversation.objects.create(user=other_user, title="Private plans")
    client = signed_in(user)

    assert client.get(reverse("web:conversation", args=[theirs.pk])).status_code == 404
    assert (
        client.post(reverse("web:rename", args=[theirs.pk]), {"title": "Mine now"}).status_code
        == 404
    )
    assert client.post(reverse("web:delete", args=[theirs.pk])).status_code == 404
    theirs.refresh_from_db()
    assert theirs.title == "Private plans"
    assert "Private plans" not in client.get("/").content.decode()


def test_conversations_are_listed_renamed_and_deleted(user):
    conversation = Conversation.objects.create(user=user, title="Budget questions")
    client = signed_in(user)
    assert "Budget questions" in client.get("/").content.decode()

    client.post(reverse("web:rename", args=[conversation.pk]), {"title": "Budget 2027"})
    conversation.refresh_from_db()
    assert conversation.title == "Budget 2027"

    response = client.post(reverse("web:delete", args=[conversation.pk]))
    assert response.status_code == 302
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_feedback_is_stored_with_the_answer(user, other_user):
    conversation = Conversation.objects.create(user=user)
    reply = Message.objects.create(
        conversation=conversation, role="assistant", content="Yes.", outcome="answered"
    )
    client = signed_in(user)
    response = client.post(
        reverse("web:feedback", args=[reply.pk]), {"value": "-1"}, HTTP_ACCEPT="application/json"
    )
    assert response.json() == {"message_id": reply.pk, "feedback": -1}
    reply.refresh_from_db()
    assert reply.feedback == -1

    stranger = signed_in(other_user)
    assert (
        stranger.post(reverse("web:feedback", args=[reply.pk]), {"value": "1"}).status_code == 404
    )
    reply.refresh_from_db()
    assert reply.feedback == -1


# --- sources and downloads -------------------------------------------------------------------
def test_a_source_of_another_users_answer_is_not_found(dev_corpus, user, other_user):
    events = ask(signed_in(user), DEEP_COPY)
    citations = next(data["citations"] for kind, data in events if kind == "citations")
    assert signed_in(other_user).get(citations[0]["url"]).status_code == 404


def test_a_source_whose_collection_became_unreadable_is_not_found(
    user, other_user, ingest_file, tmp_path
):
    collection = make_collection("Was open", everyone=True)
    ingest_file(collection, write_text(tmp_path / "w.txt", "Wombats dig burrows with their claws."))
    client = signed_in(user)
    events = ask(client, "How do wombats dig burrows?")
    url = next(data["citations"] for kind, data in events if kind == "citations")[0]["url"]
    assert client.get(url).status_code == 200

    conversation_id = events[0][1]["conversation_id"]
    collection.visibility = "restricted"
    collection.save()
    assert client.get(url).status_code == 404
    page = client.get(reverse("web:conversation", args=[conversation_id])).content.decode()
    assert url not in page
    assert "This source is no longer available to you." in page


def test_download_streams_the_original_file_and_is_audited(user, ingest_file, tmp_path):
    collection = make_collection("Handbook", everyone=True)
    document = ingest_file(collection, write_text(tmp_path / "Travel policy.txt", "Trains first."))

    response = signed_in(user).get(reverse("web:download", args=[document.pk]))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"Trains first."
    assert response["Content-Disposition"].startswith("attachment;")
    assert "Travel policy.txt" in response["Content-Disposition"]
    event = AuditEvent.objects.get(action="download")
    assert event.user == user
    assert event.document_ids == [document.pk]


def test_download_from_an_unreadable_collection_is_not_found(
    user, other_user, ingest_file, tmp_path
):
    secret = make_collection("Board minutes", users=[other_user])
    document = ingest_file(secret, write_text(tmp_path / "minutes.txt", "Secret minutes."))

    assert signed_in(user).get(reverse("web:download", args=[document.pk])).status_code == 404
    assert signed_in(other_user).get(reverse("web:download", args=[document.pk])).status_code == 200
    assert not AuditEvent.objects.filter(action="download", user=user).exists()


def test_deleted_documents_leave_no_dead_source_links(user, ingest_file, tmp_path):
    from ingestion import services

    collection = make_collection("Temp", everyone=True)
    document = ingest_file(
        collection, write_text(tmp_path / "w.txt", "Wombats dig burrows with their claws.")
    )
    client = signed_in(user)
    events = ask(client, "How do wombats dig burrows?")
    conversation_id = events[0][1]["conversation_id"]

    services.delete_document(Document.objects.get(pk=document.pk))

    page = client.get(reverse("web:conversation", args=[conversation_id])).content.decode()
    assert "/sources/" not in page
    assert not Citation.objects.filter(message__conversation_id=conversation_id).exists()


def test_a_source_shows_the_passage_once_between_its_neighbours(
    user, ingest_file, tmp_path, settings
):
    settings.RAG_CHUNK_TOKENS, settings.RAG_CHUNK_OVERLAP = 60, 20
    lines = [
        f"Archive shelf {n} holds letters written by the keeper in year {1800 + n}."
        for n in range(30)
    ]
    lines[15] = "The vault code of the Ibis archive is four four seven one."
    collection = make_collection("Archive", everyone=True)
    document = ingest_file(collection, write_text(tmp_path / "archive.txt", "\n\n".join(lines)))
    assert document.chunk_count >= 3
    client = signed_in(user)

    events = ask(client, "What is the vault code of the Ibis archive?")
    url = next(data["citations"] for kind, data in events if kind == "citations")[0]["url"]
    page = client.get(url).content.decode()

    marked = page.split("<mark>", 1)[1].split("</mark>", 1)[0]
    assert "vault code of the Ibis archive" in marked
    assert page.count("vault code of the Ibis archive") == 1, "overlap with neighbours is dropped"
    assert page.count('class="context"') == 2, "the chunk before and the chunk after"
