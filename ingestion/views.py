"""The upload console: collections, uploads with live ingestion status, retry, re-index, delete.

For staff and collection managers. Every write goes through ingestion.services; who may do what
is asked of ingestion.permissions.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.audit import Via
from ingestion import pipeline, services
from ingestion.forms import CollectionForm, CollectionSharingForm
from ingestion.models import Collection, Document
from ingestion.permissions import can_create_collections, managed_collections

DOCUMENT_ROWS = 500  # the console lists the newest documents of a collection; the admin has all


@dataclass(frozen=True)
class Counters:
    queued: int
    processing: int
    ready: int
    failed: int
    chunks: int
    disk_bytes: int
    stalled: int = 0  # of `processing`: no worker works on them any more

    @property
    def documents(self) -> int:
        return self.queued + self.processing + self.ready + self.failed

    @property
    def queue_length(self) -> int:
        return self.queued + self.processing


def counters(collections: QuerySet[Collection]) -> Counters:
    """Documents by status, chunks and disk used, over the given collections."""
    by_status = {status: Count("pk", filter=Q(status=status)) for status in Document.Status.values}
    documents = Document.objects.filter(collection__in=collections)
    totals = documents.aggregate(**by_status, chunks=Sum("chunk_count"), disk_bytes=Sum("size"))
    processing = documents.filter(status=Document.Status.PROCESSING).only(
        "status", "processing_started_at", "claimed_by"
    )
    return Counters(
        stalled=sum(pipeline.is_stalled(d) for d in processing),
        queued=totals["queued"],
        processing=totals["processing"],
        ready=totals["ready"],
        failed=totals["failed"],
        chunks=totals["chunks"] or 0,
        disk_bytes=totals["disk_bytes"] or 0,
    )


def _console_user(request: HttpRequest) -> QuerySet[Collection]:
    """The collections the user manages; PermissionDenied for users who may use no console."""
    managed = managed_collections(request.user)
    if not (can_create_collections(request.user) or managed.exists()):
        raise PermissionDenied("The console is for staff and collection managers.")
    return managed


def _managed_or_404(request: HttpRequest, pk: int) -> Collection:
    return get_object_or_404(_console_user(request), pk=pk)


def _managed_document_or_404(request: HttpRequest, pk: int) -> Document:
    managed = _console_user(request)
    return get_object_or_404(
        Document.objects.select_related("collection"), pk=pk, collection__in=managed
    )


def _documents(collection: Collection | None) -> list[Document]:
    """The newest documents, each marked `stalled` when it shows `processing` but no worker
    works on it any more (the console then offers Retry), and with its `progress`."""
    if collection is None:
        return []
    documents = list(collection.documents.defer("sha256")[:DOCUMENT_ROWS])
    for document in documents:
        document.stalled = pipeline.is_stalled(document)
        document.progress = pipeline.progress_of(document)  # type: ignore[attr-defined]
    return documents


def _time_limit_minutes() -> int:
    return max(round(settings.CELERY_TASK_TIME_LIMIT / 60), 1)


def _console_url(collection: Collection | None) -> str:
    url = reverse("console:home")
    return f"{url}?collection={collection.pk}" if collection else url


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return _render_home(request, CollectionForm())


def _render_home(request: HttpRequest, form: CollectionForm, status: int = 200) -> HttpResponse:
    managed = _console_user(request)
    collections = list(managed.annotate(document_count=Count("documents")))
    current = None
    wanted = request.GET.get("collection", "")
    if wanted.isdigit():
        current = next((c for c in collections if c.pk == int(wanted)), None)
    if current is None and collections:
        current = collections[0]
    sharing_form = None
    if current is not None and can_create_collections(request.user):
        sharing_form = CollectionSharingForm(
            initial={"sensitivity": current.sensitivity, "default_model": current.default_model}
        )
    context = {
        "collections": collections,
        "current": current,
        "sharing_form": sharing_form,
        "documents": _documents(current),
        "time_limit_minutes": _time_limit_minutes(),
        "counters": counters(managed),
        "form": form if can_create_collections(request.user) else None,
        "max_upload_mb": services.max_upload_bytes() // (1024 * 1024),
    }
    return render(request, "console/home.html", context, status=status)


@login_required
@require_POST
def create_collection(request: HttpRequest) -> HttpResponse:
    if not can_create_collections(request.user):
        raise PermissionDenied("Only staff create collections.")
    form = CollectionForm(request.POST)
    if not form.is_valid():
        return _render_home(request, form, status=400)
    collection = services.create_collection(
        request.user,
        form.cleaned_data["name"],
        description=form.cleaned_data["description"],
        visibility=form.cleaned_data["visibility"],
        sensitivity=form.cleaned_data["sensitivity"],
        reader_groups=form.cleaned_data["reader_groups"],
        via=Via.WEB,
        request=request,
    )
    flash.success(request, f"Collection “{collection.name}” created. Add documents below.")
    return redirect(_console_url(collection))


def _document_json(document: Document) -> dict:
    stalled = getattr(document, "stalled", None)
    if stalled is None:
        stalled = pipeline.is_stalled(document)
    started = document.processing_started_at
    processing = document.status == Document.Status.PROCESSING and started is not None
    return {
        "id": document.pk,
        "name": document.original_name,
        "status": document.status,
        "status_label": "Stalled" if stalled else document.get_status_display(),
        "stalled": stalled,
        # How long it has been processing, so a stuck document does not look busy forever.
        "processing_seconds": int((timezone.now() - started).total_seconds())
        if processing
        else None,
        "error": document.error,
        "page_count": document.page_count,
        "chunk_count": document.chunk_count,
        "progress": _progress_json(document),
    }


def _progress_json(document: Document) -> dict | None:
    progress = pipeline.progress_of(document)
    if progress is None:
        return None
    return {
        "stage": progress.stage,
        "stage_label": Document.Stage(progress.stage).label,
        "done": progress.done,
        "total": progress.total,
        "percent": progress.percent,
    }


@login_required
@require_POST
def upload(request: HttpRequest, pk: int) -> HttpResponse:
    """One request per file from the console's script (JSON answer); without script, a form
    with many files (back to the console with a message per file)."""
    collection = _managed_or_404(request, pk)
    files = request.FILES.getlist("file") or request.FILES.getlist("files")
    if not files:
        return JsonResponse({"error": "No file was sent.", "code": "empty"}, status=400)
    results = []
    for outcome in services.register_uploads(
        collection, files, request.user, via=Via.WEB, request=request
    ):
        if outcome.rejected is not None:
            error = outcome.rejected
            results.append({"name": outcome.filename, "error": str(error), "code": error.code})
        elif outcome.result is not None:
            result = outcome.result
            results.append({"created": result.created, "document": _document_json(result.document)})
    if "application/json" in request.headers.get("Accept", ""):
        if len(results) == 1:
            return JsonResponse(results[0], status=400 if "error" in results[0] else 201)
        return JsonResponse({"results": results})
    for item in results:
        if "error" in item:
            flash.error(request, item["error"])
        elif not item["created"]:
            flash.info(request, f"{item['document']['name']} was already in this collection.")
        else:
            flash.success(request, f"{item['document']['name']} uploaded and queued.")
    return redirect(_console_url(collection))


@login_required
@require_GET
def status(request: HttpRequest) -> JsonResponse:
    """What the console polls: the counters and the collection's document rows, as HTML
    fragments, plus each document's status for the upload list."""
    managed = _console_user(request)
    current = None
    wanted = request.GET.get("collection", "")
    if wanted.isdigit():
        current = managed.filter(pk=int(wanted)).first()
    documents = _documents(current)
    collections = managed.annotate(document_count=Count("documents"))
    return JsonResponse(
        {
            "collections_html": render_to_string(
                "console/_collections.html", {"collections": collections, "current": current}
            ),
            "counters_html": render_to_string(
                "console/_counters.html", {"counters": counters(managed)}, request
            ),
            "documents_html": render_to_string(
                "console/_documents.html",
                {
                    "documents": documents,
                    "current": current,
                    "time_limit_minutes": _time_limit_minutes(),
                },
                request,
            ),
            "documents": {str(d.pk): _document_json(d) for d in documents},
        }
    )


@login_required
@require_POST
def retry(request: HttpRequest, pk: int) -> HttpResponse:
    document = _managed_document_or_404(request, pk)
    services.reingest([document], acting_user=request.user, via=Via.WEB, request=request)
    flash.success(request, f"{document.original_name} queued again.")
    return redirect(_console_url(document.collection))


@login_required
@require_POST
def reindex(request: HttpRequest, pk: int) -> HttpResponse:
    collection = _managed_or_404(request, pk)
    count = services.reindex_collection(
        collection, acting_user=request.user, via=Via.WEB, request=request
    )
    flash.success(request, f"Queued {count} document{'s' if count != 1 else ''} for re-indexing.")
    return redirect(_console_url(collection))


@login_required
@require_POST
def sharing(request: HttpRequest, pk: int) -> HttpResponse:
    """Which models may read the collection, and its default answer model (staff managers)."""
    collection = _managed_or_404(request, pk)
    form = CollectionSharingForm(request.POST)
    if not form.is_valid():
        reasons = [str(error) for errors in form.errors.values() for error in errors]
        flash.error(request, "Not saved: " + " ".join(reasons))
        return redirect(_console_url(collection))
    changed = services.set_collection_sharing(
        request.user,
        collection,
        sensitivity=form.cleaned_data["sensitivity"],
        default_model=form.cleaned_data["default_model"],
        via=Via.WEB,
        request=request,
    )
    if changed:
        flash.success(
            request,
            f"“{collection.name}”: {collection.get_sensitivity_display()}; "
            f"default model: {collection.default_model or 'the first in-house one'}.",
        )
    return redirect(_console_url(collection))


@login_required
@require_http_methods(["GET", "POST"])
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: say what deleting removes; POST: remove it."""
    document = _managed_document_or_404(request, pk)
    if request.method == "POST":
        name, collection = document.original_name, document.collection
        services.delete_document(document, acting_user=request.user, via=Via.WEB, request=request)
        flash.success(request, f"{name} deleted.")
        return redirect(_console_url(collection))
    context = {
        "document": document,
        # Answers quoting it are redacted on deletion (retrieval's document_deleted receiver).
        "citing_answers": document.citations.values("message_id").distinct().count(),
        "back_url": _console_url(document.collection),
    }
    return render(request, "console/delete.html", context)
