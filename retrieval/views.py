"""The staff web UI: the chat page, the streamed answer, conversations, sources, downloads and
the user's API keys.

Views translate HTTP to retrieval.answering / selectors / services calls; who may see what is
decided by those and by ingestion.permissions, never here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

from django import forms
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.db.models import Count, Q
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ingestion.models import Chunk, Document
from ingestion.permissions import (
    can_create_collections,
    managed_collections,
    readable_collections,
    readable_documents,
)
from retrieval import apikeys, audit, selectors, services
from retrieval.answer_events import AnswerEvent, collect
from retrieval.answer_stream import event_stream_response, web_sse
from retrieval.answering import stream_answer
from retrieval.api.common import AskRateThrottle
from retrieval.forms import AskForm, FeedbackForm, RenameForm
from retrieval.models import ApiKey, Citation, Conversation, Message
from retrieval.rendering import render_answer_html

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class LibraryState:
    """What the user's readable collections hold, for the chat page's empty and busy states."""

    ready: int
    in_progress: int
    failed: int


def source_url(message_id: int, number: int) -> str:
    return reverse("web:source", args=[message_id, number])


def _library_state(user) -> LibraryState:
    counts = readable_documents(user).aggregate(
        ready=Count("pk", filter=Q(status=Document.Status.READY)),
        in_progress=Count(
            "pk", filter=Q(status__in=[Document.Status.QUEUED, Document.Status.PROCESSING])
        ),
        failed=Count("pk", filter=Q(status=Document.Status.FAILED)),
    )
    return LibraryState(**counts)


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


def _conversation_or_404(user, pk: int) -> Conversation:
    conversation = selectors.get_conversation(user, pk)
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def _own_message_or_404(user, pk: int) -> Message:
    message = selectors.message_of(user, pk)
    if message is None:
        raise Http404("No such message.")
    return message


def frame_context(request: HttpRequest, nav: str) -> dict:
    """What the page frame (top bar) needs on every page."""
    user = request.user
    return {
        "nav": nav,
        "show_console_link": can_create_collections(user) or managed_collections(user).exists(),
    }


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


# --- pages -------------------------------------------------------------------------------------
@login_required
@require_GET
def chat(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    user = request.user
    conversation = _conversation_or_404(user, pk) if pk else None
    collections = list(readable_collections(user))
    selected = conversation.collection_id if conversation else None
    if selected is None and request.GET.get("collection", "").isdigit():
        selected = int(request.GET["collection"])
    context = {
        **frame_context(request, "chat"),
        "conversation": conversation,
        "conversations": selectors.conversations_for(user),
        "thread": _thread(user, conversation),
        "collections": collections,
        "selected_collection": selected,
        "library": _library_state(user),
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
    message = _own_message_or_404(request.user, pk)
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
        conversation = _conversation_or_404(user, form.cleaned_data["conversation"])
    collection_id = form.cleaned_data["collection"]
    if collection_id and not readable_collections(user).filter(pk=collection_id).exists():
        raise Http404("No such collection.")
    try:
        events = stream_answer(
            user,
            form.cleaned_data["question"],
            conversation=conversation,
            collection_id=collection_id,
            via="web",
        )
    except ValueError as exc:
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
    conversation = _conversation_or_404(request.user, pk)
    form = RenameForm(request.POST)
    if form.is_valid():
        services.rename_conversation(request.user, conversation, form.cleaned_data["title"])
    else:
        flash.error(request, "A conversation needs a name.")
    return redirect("web:conversation", pk=conversation.pk)


@login_required
@require_POST
def delete_conversation(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = _conversation_or_404(request.user, pk)
    services.delete_conversation(request.user, conversation)
    flash.success(request, "Conversation deleted.")
    return redirect("web:chat")


@login_required
@require_POST
def feedback(request: HttpRequest, pk: int) -> HttpResponse:
    message = _own_message_or_404(request.user, pk)
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


# --- sources and downloads ---------------------------------------------------------------------
@dataclass(frozen=True)
class PassagePart:
    text: str
    cited: bool


def _passage_in_context(citation: Citation) -> list[PassagePart]:
    """The cited chunk between its neighbours, so the reader sees it in its surroundings."""
    chunk = citation.chunk
    if chunk is None:  # re-ingested since: the chunk is gone, the stored snippet is what we have
        return [PassagePart(citation.snippet, True)]
    around = {
        part.ordinal: part.text
        for part in Chunk.objects.filter(
            document_id=chunk.document_id,
            ordinal__gte=chunk.ordinal - 1,
            ordinal__lte=chunk.ordinal + 1,
        ).only("ordinal", "text")
    }
    parts = []
    if (before := around.get(chunk.ordinal - 1)) is not None:
        parts.append(PassagePart(_without_overlap(before, chunk.text, at_end=True), False))
    parts.append(PassagePart(chunk.text, True))
    if (after := around.get(chunk.ordinal + 1)) is not None:
        parts.append(PassagePart(_without_overlap(after, chunk.text, at_end=False), False))
    return [part for part in parts if part.text.strip()]


def _without_overlap(neighbour: str, cited: str, *, at_end: bool) -> str:
    """Neighbouring chunks repeat whole lines of the cited one (the chunker's overlap); drop
    them so the context does not show the passage twice."""
    lines, cited_lines = neighbour.split("\n"), cited.split("\n")
    for size in range(min(len(lines), len(cited_lines)), 0, -1):
        if at_end and lines[-size:] == cited_lines[:size]:
            return "\n".join(lines[:-size])
        if not at_end and lines[:size] == cited_lines[-size:]:
            return "\n".join(lines[size:])
    return neighbour


@login_required
@require_GET
def source(request: HttpRequest, message_id: int, number: int) -> HttpResponse:
    """A cited passage: title, page, heading path, the passage highlighted in its context."""
    message = _own_message_or_404(request.user, message_id)
    citation = get_object_or_404(
        Citation.objects.select_related("document", "chunk"), message=message, number=number
    )
    view = selectors.visible_citation(request.user, citation)
    if view is None:
        raise Http404("This source is not available to you.")
    document = citation.document
    context = {
        **frame_context(request, "chat"),
        "citation": view,
        "message": message,
        "document": document,
        "parts": _passage_in_context(citation),
        "back_url": reverse("web:conversation", args=[message.conversation_id]),
    }
    template = "web/_source.html" if request.GET.get("partial") else "web/source.html"
    return render(request, template, context)


@login_required
@require_GET
def download(request: HttpRequest, pk: int) -> FileResponse:
    """The original file, for readers of its collection only; every download is audited."""
    document = get_object_or_404(readable_documents(request.user), pk=pk)
    try:
        handle = document.file.open("rb")
    except FileNotFoundError as exc:
        raise Http404("The stored file is missing.") from exc
    audit.record(
        "download",
        user=request.user,
        via="web",
        document_ids=[document.pk],
        detail={"name": document.original_name},
        request=request,
    )
    return FileResponse(
        handle,
        as_attachment=True,
        filename=document.original_name,
        content_type=document.content_type or "application/octet-stream",
    )


# --- API keys ----------------------------------------------------------------------------------
class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, strip=True)


def may_manage_keys_of(actor: User, owner: User) -> bool:
    """Whether `actor` may list, create and revoke `owner`'s keys. A key acts with its owner's
    permissions, so acting for someone else is for key administrators only, and a superuser's
    keys only for another superuser (anything less would be a way up to superuser)."""
    if actor.pk == owner.pk:
        return True
    if not (actor.is_active and actor.is_staff and actor.has_perm("core.change_apikey")):
        return False
    return actor.is_superuser or not owner.is_superuser


def _key_owner_or_404(request: HttpRequest) -> User:
    """The user whose keys the page shows: the signed-in user, or `?user=<id>` for an admin.
    Anyone else asking for `?user=` gets 404, as if there were nobody by that id."""
    wanted = request.GET.get("user", "")
    if not wanted or wanted == str(request.user.pk):
        return request.user
    owner = User.objects.filter(pk=int(wanted)).first() if wanted.isdigit() else None
    if owner is None or not may_manage_keys_of(request.user, owner):
        raise Http404("No such user.")
    return owner


def keys_url(owner: User, actor: User) -> str:
    url = reverse("web:keys")
    return url if owner.pk == actor.pk else f"{url}?user={owner.pk}"


@never_cache  # the response to a creation carries the new key: no cache may keep it
@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    """The user's API keys (GET); create one (POST): the response shows the new key, once.

    The key goes straight into this response and nowhere else (no redirect, session or flash
    message), so it cannot be seen again after the page is left."""
    owner = _key_owner_or_404(request)
    form = ApiKeyForm()
    new_key = plaintext = None
    if request.method == "POST":
        form = ApiKeyForm(request.POST)
        if form.is_valid():
            try:
                new_key, plaintext = apikeys.create_key(
                    owner, form.cleaned_data["name"], created_by=request.user, request=request
                )
            except apikeys.TooManyKeys as exc:
                form.add_error("name", str(exc))
            else:
                form = ApiKeyForm()
    context = {
        **frame_context(request, "keys"),
        "owner": owner,
        "for_other_user": owner.pk != request.user.pk,
        "keys": apikeys.keys_for(owner),
        "form": form,
        "new_key": new_key,
        "plaintext": plaintext,
        "keys_url": keys_url(owner, request.user),
        "docs_url": reverse("api-docs"),
        "example_url": request.build_absolute_uri(reverse("api-collections")),
    }
    return render(request, "web/keys.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def revoke_api_key(request: HttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(ApiKey.objects.select_related("user"), pk=pk)
    if not may_manage_keys_of(request.user, key.user):
        raise Http404("No such key.")
    if apikeys.revoke_key(key, revoked_by=request.user, request=request):
        flash.success(request, f"Key “{key.name}” ({key.prefix}…) revoked: it no longer works.")
    else:
        flash.info(request, f"Key “{key.name}” was already revoked.")
    return redirect(keys_url(key.user, request.user))
