"""What the web views share: the signed-in user's own conversations and messages, or 404."""

from __future__ import annotations

from django.http import Http404

from retrieval import selectors
from retrieval.models import Conversation, Message


def conversation_or_404(user, pk: int) -> Conversation:
    conversation = selectors.get_conversation(user, pk)
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def own_message_or_404(user, pk: int) -> Message:
    message = selectors.message_of(user, pk)
    if message is None:
        raise Http404("No such message.")
    return message
