"""A cited passage in its context, and the original file of a readable document."""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from core.audit import Via
from ingestion.permissions import readable_documents
from retrieval import selectors, services
from retrieval.models import Citation
from retrieval.web.lookups import own_message_or_404


@login_required
@require_GET
def source(request: HttpRequest, message_id: int, number: int) -> HttpResponse:
    """A cited passage: title, page, heading path, the passage highlighted in its context. A
    passage of a PDF is also shown on its page, rendered by pdf.js from the download below."""
    message = own_message_or_404(request.user, message_id)
    citation = get_object_or_404(
        Citation.objects.select_related("document", "chunk"), message=message, number=number
    )
    view = selectors.visible_citation(request.user, citation)
    if view is None:
        raise Http404("This source is not available to you.")
    place = selectors.pdf_place(citation)
    context = {
        "citation": view,
        "message": message,
        "document": citation.document,
        "parts": selectors.passage_in_context(citation),
        "pdf": place,
        "pdf_boxes": json.dumps(place.boxes) if place else "",
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
        handle = services.open_download(request.user, document, via=Via.WEB, request=request)
    except FileNotFoundError as exc:
        raise Http404("The stored file is missing.") from exc
    return FileResponse(
        handle,
        as_attachment=True,
        filename=document.original_name,
        content_type=document.content_type or "application/octet-stream",
    )
