"""The chat page, the streamed answer (or, without script, the whole answer) and conversations."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from core.audit import Via
from core.endpoints import Endpoint, EndpointConfigurationError
from ingestion.permissions import readable_collections
from retrieval import routing, selectors, services
from retrieval.answer_events import AnswerEvent, collect
from retrieval.answer_stream import event_stream_response, web_sse
from retrieval.answering import stream_answer
from retrieval.api.common import AskRateThrottle
from retrieval.forms import AskForm, FeedbackForm, RenameForm
from retrieval.limits import MAX_QUESTION_CHARS
from retrieval.models import Conversation, Message
from retrieval.rendering import render_answer_html
from retrieval.web.lookups import conversation_or_404, own_message_or_404


# --- values the templates show -----------------------------------------------------------------
@dataclass(frozen=True)
class SourceLink:
    number: int
    title: str
    page: int | None
    heading: str
    url: str  # "" when the source is no longer available to this user


@dataclass(frozen=True)
class ThreadItem:
    message: selectors.MessageView
    html: str  # assistant answers: sanitised by render_answer_html; questions: ""
    sources: list[SourceLink]


def source_url(message_id: int, number: int) -> str:
    return reverse("web:source", args=[message_id, number])


def _thread_item(message: selectors.MessageView) -> ThreadItem:
    if message.role != Message.Role.ASSISTANT:
        return ThreadItem(message, "", [])
    sources = [
        # A document since deleted or no longer readable: listed, but not offered as a link.
        SourceLink(
            c.number,
            c.document_title,
            c.page,
            c.heading,
            source_url(message.id, c.number) if c.document_id is not None else "",
        )
        for c in message.citations
    ]
    urls = {source.number: source.url for source in sources if source.url}
    return ThreadItem(message, render_answer_html(message.content, urls), sources)


def _thread(user, conversation: Conversation | None) -> list[ThreadItem]:
    if conversation is None:
        return []
    return [_thread_item(m) for m in selectors.messages_with_citations(user, conversation)]


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _model_choices() -> list[Endpoint]:
    """The answer endpoints a person may pick; none shown when there is nothing to choose (or
    the configuration cannot be read: answers then say so themselves)."""
    try:
        choices = routing.answer_choices()
    except EndpointConfigurationError:
        return []
    return choices if len(choices) > 1 else []


# --- pages -------------------------------------------------------------------------------------
@login_required
@require_GET
def chat(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    user = request.user
    conversation = conversation_or_404(user, pk) if pk else None
    collections = list(readable_collections(user))
    selected = conversation.collection_id if conversation else None
    if selected is None and request.GET.get("collection", "").isdigit():
        selected = int(request.GET["collection"])
    context = {
        "conversation": conversation,
        "conversations": selectors.conversations_for(user),
        "thread": _thread(user, conversation),
        "collections": collections,
        "selected_collection": selected,
        "models": _model_choices(),
        "library": selectors.library_state(user),
        "max_question_chars": MAX_QUESTION_CHARS,
    }
    return render(request, "web/chat.html", context)


@login_required
@require_GET
def conversation_list(request: HttpRequest) -> HttpResponse:
    """The sidebar's list alone, refreshed after an answer starts a new conversation."""
    current = request.GET.get("current", "")
    return render(
        request,
        "web/_conversations.html",
        {
            "conversations": selectors.conversations_for(request.user),
            "current_id": int(current) if current.isdigit() else None,
        },
    )


@login_required
@require_GET
def message_fragment(request: HttpRequest, pk: int) -> HttpResponse:
    """One message rendered by the server: replaces the streamed text once an answer is done."""
    message = own_message_or_404(request.user, pk)
    for item in selectors.messages_with_citations(request.user, message.conversation):
        if item.id == message.pk:
            return render(request, "web/_message.html", {"item": _thread_item(item)})
    raise Http404


# --- asking ------------------------------------------------------------------------------------
@login_required
@require_POST
def ask(request: HttpRequest) -> HttpResponse:
    """Answer a question: a stream of server-sent events for the page's script, or (without
    script) the whole answer, then back to the conversation."""
    throttle = AskRateThrottle()  # one answer budget per user, shared with the API
    if not throttle.allow_request(request, None):
        response = HttpResponse(
            "You are asking faster than the answer limit allows; wait a moment and try again.",
            status=429,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = str(math.ceil(throttle.wait() or 1))
        return response
    form = AskForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Type a question first.")
    user = request.user
    conversation = None
    if form.cleaned_data["conversation"]:
        conversation = conversation_or_404(user, form.cleaned_data["conversation"])
    collection_id = form.cleaned_data["collection"]
    if collection_id and not readable_collections(user).filter(pk=collection_id).exists():
        raise Http404("No such collection.")
    try:
        events = stream_answer(
            user,
            form.cleaned_data["question"],
            conversation=conversation,
            collection_id=collection_id,
            via=Via.WEB,
            model=form.cleaned_data["model"] or None,
        )
    except ValueError as exc:  # routing.UnknownModel too
        return HttpResponseBadRequest(str(exc))
    if "text/event-stream" not in request.headers.get("Accept", ""):
        return _answer_without_script(request, events, conversation)
    return event_stream_response(request, web_sse(events), cache_control="no-cache, no-store")


def _answer_without_script(
    request: HttpRequest, events: Iterator[AnswerEvent], conversation: Conversation | None
) -> HttpResponse:
    answer = collect(events)
    if answer.error is not None:
        flash.error(request, answer.error.text)
    conversation_id = answer.conversation_id or (conversation.pk if conversation else None)
    if conversation_id:
        return redirect("web:conversation", pk=conversation_id)
    return redirect("web:chat")


# --- conversations -----------------------------------------------------------------------------
@login_required
@require_POST
def rename_conversation(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = conversation_or_404(request.user, pk)
    form = RenameForm(request.POST)
    if form.is_valid():
        services.rename_conversation(request.user, conversation, form.cleaned_data["title"])
    else:
        flash.error(request, "A conversation needs a name.")
    return redirect("web:conversation", pk=conversation.pk)


@login_required
@require_POST
def delete_conversation(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = conversation_or_404(request.user, pk)
    services.delete_conversation(request.user, conversation)
    flash.success(request, "Conversation deleted.")
    return redirect("web:chat")


@login_required
@require_POST
def feedback(request: HttpRequest, pk: int) -> HttpResponse:
    message = own_message_or_404(request.user, pk)
    if message.role != Message.Role.ASSISTANT:
        raise Http404
    form = FeedbackForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Feedback is 1, 0 or -1.")
    services.set_feedback(
        request.user, message, form.cleaned_data["value"], form.cleaned_data["comment"]
    )
    if _wants_json(request):
        return JsonResponse({"message_id": message.pk, "feedback": form.cleaned_data["value"]})
    return redirect("web:conversation", pk=message.conversation_id)
