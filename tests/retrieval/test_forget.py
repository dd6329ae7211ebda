"""Deleting a document erases its text everywhere: chunks, citations and the answers quoting it."""

from __future__ import annotations

import pytest

from ingestion.services import delete_document
from retrieval.answering import answer
from retrieval.models import Citation, Message
from retrieval.selectors import messages_with_citations
from retrieval.services import REDACTED_ANSWER, forget_document
from tests.database_scan import columns, columns_containing, tsvector_columns
from tests.documents import write_markdown

SECRET = "The Quillfeather merger closes on 14 March 2027 at a price of 812 million euros."
OTHER = "The cafeteria serves vegetarian lasagne every Thursday at noon."


def tables_containing(phrase: str) -> list[str]:
    return columns_containing([phrase], columns() + tsvector_columns())


@pytest.fixture
def secret_document(collection, ingest_file, tmp_path):
    path = write_markdown(
        tmp_path / "merger.md", "Quillfeather merger", [("Closing", SECRET), ("Canteen", OTHER)]
    )
    return ingest_file(collection, path)


@pytest.fixture
def answered(settings, user, secret_document):
    settings.RAG_LLM_BASE_URL = ""  # the extractive answerer quotes the document verbatim
    result = answer(user, "When does the Quillfeather merger close and at what price?")
    assert "812 million" in result.text
    assert {c.document_id for c in result.citations} == {secret_document.pk}
    return result


def test_the_document_text_is_in_answers_and_citations_before_deletion(answered):
    # The check below can only pass for the right reason if the text was there to begin with.
    places = tables_containing("812 million euros")
    assert "retrieval_message.content" in places
    assert "retrieval_citation.snippet" in places
    assert "ingestion_chunk.text" in places


def test_deleting_a_document_leaves_none_of_its_text_in_any_table(answered, secret_document):
    delete_document(secret_document)

    assert tables_containing("Quillfeather merger closes") == []
    assert tables_containing("812 million") == []
    assert tables_containing("vegetarian lasagne") == []
    reply = Message.objects.get(pk=answered.message_id)
    assert reply.content == REDACTED_ANSWER
    assert not Citation.objects.filter(message=reply).exists()


def test_the_question_and_conversation_survive_with_a_note(answered, secret_document, user):
    delete_document(secret_document)

    [question, reply] = messages_with_citations(
        user, Message.objects.get(pk=answered.message_id).conversation
    )
    assert question.content.startswith("When does the Quillfeather merger close")
    assert reply.content == REDACTED_ANSWER
    assert reply.citations == []


def test_forgetting_spares_answers_that_cited_other_documents(
    answered, collection, ingest_file, tmp_path, user
):
    other = ingest_file(
        collection,
        write_markdown(tmp_path / "canteen.md", "Canteen", [("Menu", "Soup is served daily.")]),
    )
    kept = answer(user, "What soup is served daily in the canteen?")
    assert kept.citations
    assert {c.document_id for c in kept.citations} == {other.pk}

    forget_document(Message.objects.get(pk=answered.message_id).citations.first().document)

    assert Message.objects.get(pk=kept.message_id).content == kept.text
    assert Citation.objects.filter(message_id=kept.message_id).count() == len(kept.citations)
