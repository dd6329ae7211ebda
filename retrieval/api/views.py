"""REST endpoints for search, answers (JSON or server-sent events), conversations and API keys.

Each view validates its input, calls a retrieval service or selector, and renders the result.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import apikeys
from core.audit import Via
from core.models import ApiKey
from ingestion import permissions
from retrieval import answering, routing, selectors, services
from retrieval.answer_events import AnswerEvent, CollectedAnswer
from retrieval.answer_stream import api_sse, collect_for_api, event_stream_response, fail_fast
from retrieval.api.common import ApiRateThrottle, AskRateThrottle, EventStreamAccepted
from retrieval.models import Conversation, Message
from retrieval.rendering import sanitize_answer
from retrieval.serializers import (
    AnswerSerializer,
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    AskRequestSerializer,
    ConversationDetailSerializer,
    ConversationSerializer,
    NewApiKeySerializer,
    PassageSerializer,
    SearchRequestSerializer,
    SearchResultSerializer,
)


def readable_collection_or_400(user: User, collection_id: int | None) -> int | None:
    """A collection id from a request body, checked readable. Unknown and unreadable ids get the
    same answer, so the API never confirms that someone else's collection exists."""
    if collection_id is None:
        return None
    if not permissions.readable_collections(user).filter(pk=collection_id).exists():
        raise exceptions.ValidationError({"collection": ["No such collection."]})
    return collection_id


def own_conversation_or_400(user: User, conversation_id: int | None) -> Conversation | None:
    if conversation_id is None:
        return None
    conversation = selectors.get_conversation(user, conversation_id)
    if conversation is None:
        raise exceptions.ValidationError({"conversation": ["No such conversation."]})
    return conversation


def start_answer(
    user: User,
    question: str,
    conversation: Conversation | None,
    collection_id: int | None,
    via: Via = Via.API,
    model: str | None = None,
) -> Iterator[AnswerEvent]:
    """answering.stream_answer with its boundary errors (empty question, a model that may not
    answer, someone else's conversation) turned into API errors."""
    try:
        return answering.stream_answer(
            user,
            question,
            conversation=conversation,
            collection_id=collection_id,
            via=via,
            model=model or None,
        )
    except routing.UnknownModel as exc:
        raise exceptions.ValidationError({"model": [str(exc)]}) from None
    except ValueError as exc:
        raise exceptions.ValidationError({"question": [str(exc)]}) from None
    except DjangoPermissionDenied:
        raise exceptions.ValidationError({"conversation": ["No such conversation."]}) from None


@extend_schema(tags=["search"])
class SearchView(APIView):
    """The passages best matching a query, among documents you may read."""

    parser_classes = [JSONParser]

    @extend_schema(request=SearchRequestSerializer, responses={200: SearchResultSerializer})
    def post(self, request: Request) -> Response:
        incoming = SearchRequestSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        collection_id = readable_collection_or_400(request.user, data.get("collection"))
        passages = services.search_passages(
            request.user,
            data["query"],
            via=Via.API,
            request=request._request,
            limit=data.get("limit"),
            collection_ids=[collection_id] if collection_id is not None else None,
        )
        return Response({"results": PassageSerializer(passages, many=True).data})


def sse_event_schema(events: list[str]) -> dict:
    """One server-sent event as the schema describes it (OpenAPI 3.0: the schema of a
    text/event-stream response is that of each event); `data` is a JSON document."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": events},
            "data": {"type": "string", "description": "A JSON document."},
        },
    }


@extend_schema(tags=["answers"])
class AskView(EventStreamAccepted, APIView):
    """A grounded answer with citations; `stream: true` answers as server-sent events."""

    parser_classes = [JSONParser]

    throttle_classes = [ApiRateThrottle, AskRateThrottle]

    @extend_schema(
        request=AskRequestSerializer,
        responses={
            (200, "application/json"): AnswerSerializer,
            (200, "text/event-stream"): OpenApiResponse(
                sse_event_schema(["meta", "token", "citations", "done", "error"]),
                description="With stream=true: `event: meta` {conversation, message}, then "
                "`event: token` {text} pieces, `event: citations` {citations}, `event: done` "
                "{outcome}; or `event: error` {code, message} if the model fails mid-answer.",
            ),
        },
        extensions={"x-extra-errors": ["503"]},
    )
    def post(self, request: Request) -> Response | StreamingHttpResponse:
        incoming = AskRequestSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        collection_id = readable_collection_or_400(request.user, data.get("collection"))
        conversation = own_conversation_or_400(request.user, data.get("conversation"))
        events = fail_fast(
            start_answer(
                request.user,
                data["question"],
                conversation,
                collection_id,
                model=data.get("model"),
            )
        )
        if data["stream"]:
            return event_stream_response(request, api_sse(events))
        return Response(AnswerSerializer(answer_body(collect_for_api(events))).data)


def answer_body(answer: CollectedAnswer) -> dict:
    """The whole answer, as the JSON response carries it."""
    return {
        "answer": answer.text,
        "citations": answer.citations,
        "conversation": answer.conversation_id,
        "message": answer.message_id,
        "outcome": answer.outcome,
    }


@extend_schema(tags=["conversations"])
class ConversationListView(generics.ListAPIView):
    """Your conversations, most recently active first."""

    serializer_class = ConversationSerializer

    def get_queryset(self) -> QuerySet[Conversation]:
        return selectors.conversations_for(self.request.user)


@extend_schema(tags=["conversations"])
class ConversationDetailView(APIView):
    """One of your conversations with its messages; citations of documents you can no longer
    read come back with document_id null and empty text, and the answer citing them reads "This
    answer quoted documents you can no longer access." (it may have quoted them)."""

    def _get(self, request: Request, pk: int) -> Conversation:
        conversation = selectors.get_conversation(request.user, pk)
        if conversation is None:
            raise exceptions.NotFound("No such conversation.")
        return conversation

    @extend_schema(responses={200: ConversationDetailSerializer})
    def get(self, request: Request, pk: int) -> Response:
        conversation = self._get(request, pk)
        messages = [
            replace(m, content=sanitize_answer(m.content))
            if m.role == Message.Role.ASSISTANT
            else m
            for m in selectors.messages_with_citations(request.user, conversation)
        ]
        return Response(
            ConversationDetailSerializer(conversation, context={"messages": messages}).data
        )

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        services.delete_conversation(request.user, self._get(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SignedInSession(BasePermission):
    """Key management needs a signed-in session: a key that could make keys would outlive its
    own revocation through the ones it made."""

    message = (
        "API keys cannot list, create or revoke API keys; sign in and use the API keys page "
        "(or this endpoint from the signed-in session)."
    )

    def has_permission(self, request: Request, view) -> bool:
        return not isinstance(request.auth, ApiKey)


class TooManyKeys(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "too_many_keys"


@extend_schema(tags=["api keys"])
class ApiKeyListView(generics.ListCreateAPIView):
    """Your API keys (GET); create one (POST: the key is in the response, shown only then).
    Signed-in sessions only; at most RAG_MAX_API_KEYS active keys per user."""

    parser_classes = [JSONParser]
    permission_classes = [IsAuthenticated, SignedInSession]

    serializer_class = ApiKeySerializer

    def get_queryset(self) -> QuerySet[ApiKey]:
        return apikeys.keys_for(self.request.user)

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: NewApiKeySerializer})
    def post(self, request: Request) -> Response:
        incoming = ApiKeyCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        try:
            key, plaintext = apikeys.create_key(
                request.user, incoming.validated_data["name"], via=Via.API, request=request._request
            )
        except apikeys.TooManyKeys as exc:
            raise TooManyKeys(str(exc)) from None
        key.key = plaintext
        return Response(NewApiKeySerializer(key).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["api keys"])
class ApiKeyDetailView(generics.RetrieveDestroyAPIView):
    """One of your keys (GET); revoke it (DELETE: it stops working at once, the row is kept).
    Signed-in sessions only."""

    permission_classes = [IsAuthenticated, SignedInSession]
    serializer_class = ApiKeySerializer

    def get_queryset(self) -> QuerySet[ApiKey]:
        return apikeys.keys_for(self.request.user)

    def perform_destroy(self, key: ApiKey) -> None:
        apikeys.revoke_key(
            key, revoked_by=self.request.user, via=Via.API, request=self.request._request
        )
