"""Reading conversations: only one's own, and citations only of documents one may still read."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied

from retrieval.answering import answer
from retrieval.models import Citation, Conversation
from retrieval.selectors import (
    conversations_for,
    get_conversation,
    message_of,
    messages_with_citations,
    visible_citation,
)
from tests.conftest import make_collection
from tests.documents import write_markdown

FACT = "Badge renewals are handled by the Facilities desk on the second floor."


@pytest.fixture
def reader(db) -> User:
    return User.objects.create_user("reader", password="a-long-test-password")


@pytest.fixture
def restricted_answer(settings, reader, ingest_file, tmp_path):
    """An answer of `reader` citing a document of a collection only `reader` may read."""
    settings.RAG_LLM_BASE_URL = ""
    restricted = make_collection("Facilities", users=[reader])
    document = ingest_file(
        restricted, write_markdown(tmp_path / "badges.md", "Badges", [("Renewal", FACT)])
    )
    result = answer(reader, "Who handles badge renewals?")
    assert {c.document_id for c in result.citations} == {document.pk}
    return result, restricted


def test_users_see_only_their_own_conversations(user, reader):
    mine = Conversation.objects.create(user=user, title="mine")
    theirs = Conversation.objects.create(user=reader, title="theirs")

    assert list(conversations_for(user)) == [mine]
    assert get_conversation(user, mine.pk) == mine
    assert get_conversation(user, theirs.pk) is None
    with pytest.raises(PermissionDenied):
        messages_with_citations(user, theirs)


def test_citations_show_while_the_document_is_readable(restricted_answer, reader):
    result, _ = restricted_answer
    conversation = Conversation.objects.get(pk=result.conversation_id)

    [question, reply] = messages_with_citations(reader, conversation)

    assert question.role == "user"
    assert reply.role == "assistant"
    assert reply.citations
    assert reply.citations[0].snippet.startswith("Badge renewals")
    citation = Citation.objects.get(message_id=reply.id, number=reply.citations[0].number)
    assert visible_citation(reader, citation).document_title == "Badges"
    assert visible_citation(reader, citation.pk) == visible_citation(reader, citation)


def test_citations_become_unavailable_when_access_is_lost(restricted_answer, reader):
    result, restricted = restricted_answer
    restricted.reader_users.remove(reader)
    conversation = Conversation.objects.get(pk=result.conversation_id)

    [_, reply] = messages_with_citations(reader, conversation)

    assert reply.citations, "the marker still resolves to a numbered citation"
    for citation in reply.citations:
        assert citation.document_id is None
        assert citation.snippet == citation.document_title == citation.heading == ""
    citation = Citation.objects.filter(message_id=reply.id).first()
    assert visible_citation(reader, citation) is None


def test_a_citation_of_someone_elses_conversation_is_not_visible(restricted_answer, reader, user):
    result, restricted = restricted_answer
    restricted.reader_users.add(user)  # even with read access to the document
    citation = Citation.objects.filter(message_id=result.message_id).first()

    assert visible_citation(user, citation) is None
    assert message_of(user, result.message_id) is None
    assert message_of(reader, result.message_id).pk == result.message_id
