"""An OpenAI-compatible chat completions endpoint, so tools built on the openai SDK get grounded
answers by pointing base_url at /api/v1/openai. Translation only: answers come from answering.

Extensions to OpenAI's shapes: `citations`, `conversation_id` and `outcome` at the top level of a
completion (and of the last stream chunk); `conversation` and `collection` accepted in requests.
"""

from __future__ import annotations

import time
import uuid

from django.conf import settings
from django.contrib.auth.models import User
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from retrieval import routing, services
from retrieval.answer_stream import (
    citation_dicts,
    collect_for_api,
    event_stream_response,
    fail_fast,
    openai_chunks,
)
from retrieval.api.common import ApiRateThrottle, AskRateThrottle, EventStreamAccepted
from retrieval.api.views import (
    own_conversation_or_400,
    readable_collection_or_400,
    sse_event_schema,
    start_answer,
)
from retrieval.models import Conversation
from retrieval.serializers import (
    ChatCompletionRequestSerializer,
    ChatCompletionSerializer,
    ModelListSerializer,
    ModelSerializer,
)

MODEL_ID = "ragsite"
MODEL_CREATED = 1767225600  # 2026-01-01: a fixed date, as OpenAI's own model list gives
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


class ModelNotFound(exceptions.NotFound):
    default_code = "model_not_found"


class OpenAIView(APIView):
    """Errors carry OpenAI's `error.type` too, which the openai SDK reads."""

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        if isinstance(getattr(response, "data", None), dict) and "error" in response.data:
            response.data["error"]["type"] = _ERROR_TYPES.get(response.status_code, "api_error")
        return response


def model_dict(model_id: str = MODEL_ID) -> dict:
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": "ragsite"}


def model_ids() -> list[str]:
    """ "ragsite" (the collection's default model, else the in-house default) and the configured
    answer endpoints by name (RAG_MODEL_ENDPOINTS; today's default setup lists only "ragsite")."""
    return [MODEL_ID] + [e.name for e in routing.answer_choices() if not e.derived]


def endpoint_name(model: str) -> str | None:
    """The answer endpoint a request's `model` names (None: the default); ModelNotFound, as
    OpenAI answers, for a name that is neither "ragsite" nor an answer endpoint."""
    if model == MODEL_ID:
        return None
    if any(e.name == model for e in routing.answer_choices()):
        return model
    raise ModelNotFound(
        f"The model '{model}' does not exist; use one of: {', '.join(model_ids())}."
    )


@extend_schema(tags=["openai"])
class ModelListView(OpenAIView):
    """The models this server offers: answers grounded in the documents you may read, by the
    default model ("ragsite") or a configured endpoint by name."""

    @extend_schema(responses={200: ModelListSerializer}, operation_id="openai_models_list")
    def get(self, request: Request) -> Response:
        return Response({"object": "list", "data": [model_dict(m) for m in model_ids()]})


@extend_schema(tags=["openai"])
class ModelDetailView(OpenAIView):
    @extend_schema(responses={200: ModelSerializer}, operation_id="openai_models_retrieve")
    def get(self, request: Request, model: str) -> Response:
        endpoint_name(model)
        return Response(model_dict(model))


def recent_turns(history: list[dict]) -> list[tuple[str, str]]:
    """The newest user and assistant messages of `history` within RAG_API_HISTORY_MESSAGES and
    RAG_API_HISTORY_CHARS, oldest first. Older ones are dropped whole (chat tools resend the
    whole conversation each time, so a long one must keep working): a message that does not fit
    ends the history there. Lengths are checked before any other work on a message's text."""
    turns: list[tuple[str, str]] = []
    room = settings.RAG_API_HISTORY_CHARS
    for message in reversed(history):
        if len(turns) >= settings.RAG_API_HISTORY_MESSAGES:
            break
        if message["role"] not in {"user", "assistant"}:
            continue
        content = message.get("content") or ""
        if len(content) > room:
            break
        room -= len(content)
        if content := content.strip():
            turns.append((message["role"], content))
    turns.reverse()
    return turns


def conversation_from_history(
    user: User, history: list[dict], collection_id: int | None
) -> Conversation | None:
    """A fresh conversation holding the recent earlier turns the client sent, so follow-up
    questions are understood in context. System and tool messages are dropped: the server's own
    grounding instructions are the only ones the model gets."""
    turns = recent_turns(history)
    if not turns:
        return None
    first_question = next((text for role, text in turns if role == "user"), turns[0][1])
    conversation = services.create_conversation(user, first_question, collection_id)
    services.add_history(user, conversation, turns)
    return conversation


@extend_schema(tags=["openai"])
class ChatCompletionView(EventStreamAccepted, OpenAIView):
    """OpenAI's POST /chat/completions: the last user message is the question, earlier user and
    assistant messages are the conversation so far (or send `conversation` to continue a stored
    one). Each request without `conversation` starts a new conversation, listed under yours."""

    throttle_classes = [ApiRateThrottle, AskRateThrottle]
    parser_classes = [JSONParser]

    @extend_schema(
        request=ChatCompletionRequestSerializer,
        responses={
            (200, "application/json"): ChatCompletionSerializer,
            (200, "text/event-stream"): OpenApiResponse(
                sse_event_schema(["message"]),
                description="With stream=true: `data: {chat.completion.chunk}` lines — the "
                "role first, then content pieces, then finish_reason stop with `citations` — "
                "and `data: [DONE]`.",
            ),
        },
        extensions={"x-extra-errors": ["503"]},
        operation_id="openai_chat_completions_create",
    )
    def post(self, request: Request) -> Response | StreamingHttpResponse:
        incoming = ChatCompletionRequestSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        chosen = endpoint_name(data["model"])
        collection_id = readable_collection_or_400(request.user, data.get("collection"))
        if data.get("conversation") is not None:
            conversation = own_conversation_or_400(request.user, data["conversation"])
        else:
            conversation = conversation_from_history(
                request.user, data["messages"][:-1], collection_id
            )
        question = data["messages"][-1]["content"]
        events = fail_fast(
            start_answer(request.user, question, conversation, collection_id, model=chosen)
        )
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": data["model"],
            "system_fingerprint": None,
        }
        if data["stream"]:
            return event_stream_response(request, openai_chunks(base, events))
        answer = collect_for_api(events)
        return Response(
            {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer.text},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "citations": citation_dicts(answer.citations),
                "conversation_id": answer.conversation_id,
                "outcome": answer.outcome,
            }
        )
