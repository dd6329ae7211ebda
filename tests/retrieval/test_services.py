"""Conversation write paths: create, rename, delete, feedback, each only by the owner."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied

from retrieval import services
from retrieval.models import Conversation, Message


@pytest.fixture
def other(db) -> User:
    return User.objects.create_user("other", password="a-long-test-password")


@pytest.fixture
def conversation(user, collection) -> Conversation:
    return services.create_conversation(user, "How do refunds work?", collection)


def test_a_new_conversation_is_titled_from_the_question(user, collection):
    long = services.create_conversation(user, "word " * 50)
    assert len(long.title) <= services.TITLE_CHARS + 1
    assert long.title.endswith("…")
    short = services.create_conversation(user, "  How do\nrefunds work?  ", collection.pk)
    assert short.title == "How do refunds work?"
    assert short.collection_id == collection.pk


def test_rename_and_delete_are_for_the_owner_only(conversation, user, other):
    with pytest.raises(PermissionDenied):
        services.rename_conversation(other, conversation, "Mine now")
    with pytest.raises(PermissionDenied):
        services.delete_conversation(other, conversation)

    services.rename_conversation(user, conversation, "  Refunds  ")
    conversation.refresh_from_db()
    assert conversation.title == "Refunds"
    with pytest.raises(ValueError, match="cannot be empty"):
        services.rename_conversation(user, conversation, "   ")

    services.delete_conversation(user, conversation)
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_feedback_on_answers(conversation, user, other):
    question = Message.objects.create(conversation=conversation, role="user", content="Q?")
    reply = Message.objects.create(conversation=conversation, role="assistant", content="A.")

    services.set_feedback(user, reply, -1, " wrong page ")
    reply.refresh_from_db()
    assert (reply.feedback, reply.feedback_comment) == (-1, "wrong page")

    with pytest.raises(PermissionDenied):
        services.set_feedback(other, reply, 1)
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        services.set_feedback(user, reply, 5)
    with pytest.raises(ValueError, match="answers only"):
        services.set_feedback(user, question, 1)
