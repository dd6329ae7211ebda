"""API shapes for search, answers, conversations, API keys and the OpenAI-compatible endpoint.

Request serializers validate at the boundary; response serializers render service dataclasses.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.models import ApiKey
from retrieval.limits import MAX_QUESTION_CHARS
from retrieval.models import Conversation, Message

# Messages in one chat completions request: counted before any message is validated. Far above
# what the history keeps (RAG_API_HISTORY_MESSAGES), so real chats never meet it.
MAX_CHAT_MESSAGES = 1000
BIGINT = 2**63 - 1


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it at the boundary rather than fail on save.
    if "\x00" in value:
        raise serializers.ValidationError("NUL characters are not allowed.")
    return value


class _Id(serializers.IntegerField):
    def __init__(self, **kwargs: Any):
        super().__init__(min_value=1, max_value=BIGINT, **kwargs)


# --- search ------------------------------------------------------------------------------------
class SearchRequestSerializer(serializers.Serializer):
    query = serializers.CharField(max_length=MAX_QUESTION_CHARS, validators=[_no_nul])
    collection = _Id(required=False, allow_null=True, help_text="Search only this collection.")
    limit = serializers.IntegerField(min_value=1, max_value=50, required=False)


class PassageSerializer(serializers.Serializer):
    chunk_id = serializers.IntegerField()
    document_id = serializers.IntegerField()
    collection_id = serializers.IntegerField()
    document_title = serializers.CharField()
    text = serializers.CharField()
    heading = serializers.CharField()
    page_start = serializers.IntegerField(allow_null=True)
    page_end = serializers.IntegerField(allow_null=True)
    score = serializers.FloatField(help_text="Fused rank score; higher is better.")
    similarity = serializers.FloatField(
        allow_null=True, help_text="Cosine similarity to the query."
    )


class SearchResultSerializer(serializers.Serializer):
    results = PassageSerializer(many=True)


# --- answers -----------------------------------------------------------------------------------
class AskRequestSerializer(serializers.Serializer):
    question = serializers.CharField(max_length=MAX_QUESTION_CHARS, validators=[_no_nul])
    conversation = _Id(
        required=False, allow_null=True, help_text="Continue this conversation of yours."
    )
    collection = _Id(required=False, allow_null=True, help_text="Ask only this collection.")
    model = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=100,
        help_text="The model endpoint to answer with (GET /api/v1/openai/models lists them); "
        "default: the collection's default model, else the in-house default. Passages from "
        "collections the model may not receive are left out, and the answer says so.",
    )
    stream = serializers.BooleanField(
        default=False, help_text="Answer as server-sent events: meta, token…, citations, done."
    )


class CitationSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    document_id = serializers.IntegerField(allow_null=True)
    chunk_id = serializers.IntegerField(allow_null=True)
    document_title = serializers.CharField()
    page = serializers.IntegerField(allow_null=True)
    heading = serializers.CharField()
    snippet = serializers.CharField()


class AnswerSerializer(serializers.Serializer):
    answer = serializers.CharField()
    citations = CitationSerializer(many=True)
    conversation = serializers.IntegerField()
    message = serializers.IntegerField()
    outcome = serializers.ChoiceField(choices=Message.Outcome.choices)


# --- conversations -----------------------------------------------------------------------------
class ConversationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Conversation
        fields = ["id", "title", "collection", "created_at", "updated_at"]
        read_only_fields = fields


class MessageSerializer(serializers.Serializer):
    """A selectors.MessageView: citations of documents the reader may no longer read are
    already blanked (document_id null), and the answer citing them withheld, by the selector."""

    id = serializers.IntegerField()
    role = serializers.ChoiceField(choices=Message.Role.choices)
    content = serializers.CharField()
    outcome = serializers.CharField(help_text="Assistant messages: a Message outcome; else empty.")
    created_at = serializers.DateTimeField()
    citations = CitationSerializer(many=True)


class ConversationDetailSerializer(ConversationSerializer):
    messages = serializers.SerializerMethodField()

    class Meta(ConversationSerializer.Meta):
        fields = [*ConversationSerializer.Meta.fields, "messages"]
        read_only_fields = fields

    @extend_schema_field(MessageSerializer(many=True))
    def get_messages(self, conversation: Conversation) -> list[dict]:
        return MessageSerializer(self.context["messages"], many=True).data


# --- API keys ----------------------------------------------------------------------------------
class ApiKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, validators=[_no_nul])


class NewApiKeySerializer(ApiKeySerializer):
    key = serializers.CharField(help_text="The key itself. Shown this once; store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


# --- OpenAI-compatible -------------------------------------------------------------------------
_CONTENT_SCHEMA = {
    "oneOf": [
        {"type": "string"},
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
                "required": ["type"],
            },
        },
    ],
    "nullable": True,
}


@extend_schema_field(_CONTENT_SCHEMA)
class ChatContentField(serializers.Field):
    """A message's content as OpenAI sends it: a string, or a list of parts of which the text
    parts are kept (images and audio are not something we can search with)."""

    def to_internal_value(self, data: Any) -> str:
        if data is None:
            return ""
        if isinstance(data, str):
            return _no_nul(data)
        if isinstance(data, list):
            texts = []
            for part in data:
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise serializers.ValidationError("Each content part needs a type.")
                if part["type"] == "text":
                    if not isinstance(part.get("text"), str):
                        raise serializers.ValidationError("A text part needs a text string.")
                    texts.append(part["text"])
            return _no_nul("\n".join(texts))
        raise serializers.ValidationError("Content is a string or a list of content parts.")

    def to_representation(self, value: str) -> str:
        return value


class ChatMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "developer", "user", "assistant", "tool"])
    content = ChatContentField(required=False, allow_null=True)
    name = serializers.CharField(required=False, allow_blank=True)


class ChatCompletionRequestSerializer(serializers.Serializer):
    """OpenAI's chat.completions request; unknown fields (temperature, max_tokens…) are
    accepted and ignored, since the answer's grounding settings are the server's."""

    model = serializers.CharField(max_length=200)
    messages = ChatMessageSerializer(many=True, allow_empty=False, max_length=MAX_CHAT_MESSAGES)
    stream = serializers.BooleanField(default=False)
    conversation = _Id(
        required=False,
        allow_null=True,
        help_text="ragsite extension: continue this conversation of yours; earlier messages in "
        "`messages` are then ignored in favour of the stored history.",
    )
    collection = _Id(
        required=False, allow_null=True, help_text="ragsite extension: ask only this collection."
    )

    def validate_messages(self, messages: list[dict]) -> list[dict]:
        question = messages[-1].get("content") or ""
        if messages[-1]["role"] != "user" or not question.strip():
            raise serializers.ValidationError("The last message must be a non-empty user message.")
        messages[-1]["content"] = question
        if len(question) > MAX_QUESTION_CHARS:
            raise serializers.ValidationError(
                f"The question is longer than {MAX_QUESTION_CHARS} characters."
            )
        return messages


class ChatCompletionMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["assistant"])
    content = serializers.CharField()


class ChatCompletionChoiceSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    message = ChatCompletionMessageSerializer()
    finish_reason = serializers.ChoiceField(choices=["stop"])
    logprobs = serializers.JSONField(allow_null=True)


class ChatCompletionSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["chat.completion"])
    created = serializers.IntegerField()
    model = serializers.CharField()
    choices = ChatCompletionChoiceSerializer(many=True)
    citations = CitationSerializer(many=True, help_text="ragsite extension: the cited passages.")
    conversation_id = serializers.IntegerField(help_text="ragsite extension.")
    outcome = serializers.ChoiceField(
        choices=Message.Outcome.choices, help_text="ragsite extension."
    )


class ModelSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["model"])
    created = serializers.IntegerField()
    owned_by = serializers.CharField()


class ModelListSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = ModelSerializer(many=True)
