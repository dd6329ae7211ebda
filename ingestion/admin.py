"""The Django admin for collections and documents: multi-file upload, filters, bulk actions.

Uploads go through services.register_upload like every other entry point. Every action checks
the model permission it needs (a "view" permission only looks) and writes one audit row (via
"admin"); staff who are not superusers see and act on the collections they may read only, as in
the console and the API.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse

from core.audit import Via
from ingestion import permissions, services
from ingestion.models import Chunk, Collection, Document


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data]
        return [single(data, initial)]


class UploadForm(forms.Form):
    collection = forms.ModelChoiceField(queryset=Collection.objects.none())
    files = MultipleFileField(label="Files")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        # Only where the user may upload: another collection is "not one of the choices", so a
        # duplicate upload can never tell anyone what a collection they cannot read holds.
        self.fields["collection"].queryset = permissions.managed_collections(user)


class ActionPermissionMixin:
    """Admin actions named in `action_permissions` need that permission ("change", "delete"):
    they are not offered without it, and a request naming one anyway is refused with 403."""

    action_permissions: dict[str, str] = {}

    def get_actions(self, request: HttpRequest):
        actions = super().get_actions(request)
        for name, permission in self.action_permissions.items():
            if not self._allowed(request, permission):
                actions.pop(name, None)
        return actions

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        if request.method == "POST":
            permission = self.action_permissions.get(request.POST.get("action", ""))
            if permission and not self._allowed(request, permission):
                raise PermissionDenied
        return super().changelist_view(request, extra_context)

    def _allowed(self, request: HttpRequest, permission: str) -> bool:
        return getattr(self, f"has_{permission}_permission")(request)


@admin.register(Collection)
class CollectionAdmin(ActionPermissionMixin, admin.ModelAdmin):
    list_display = ["name", "visibility", "sensitivity", "document_count", "created_at"]
    list_filter = ["visibility", "sensitivity"]
    search_fields = ["name", "description"]
    filter_horizontal = ["reader_groups", "reader_users", "managers"]
    actions = ["reindex"]
    action_permissions = {"reindex": "change"}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Collection]:
        return (
            super()
            .get_queryset(request)
            .filter(pk__in=permissions.managed_collections(request.user).values("pk"))
        )

    def save_model(self, request: HttpRequest, obj: Collection, form, change: bool) -> None:
        """Which models may read a collection changes through the service, which audits it."""
        sharing = {"sensitivity": obj.sensitivity, "default_model": obj.default_model}
        if not change or not {"sensitivity", "default_model"} & set(form.changed_data):
            super().save_model(request, obj, form, change)
            return
        stored = Collection.objects.values("sensitivity", "default_model").get(pk=obj.pk)
        obj.sensitivity, obj.default_model = stored["sensitivity"], stored["default_model"]
        super().save_model(request, obj, form, change)
        services.set_collection_sharing(
            request.user, obj, **sharing, via=Via.ADMIN, request=request
        )

    def delete_model(self, request: HttpRequest, obj: Collection) -> None:
        self._delete(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Collection]) -> None:
        for collection in queryset:
            self._delete(request, collection)

    def _delete(self, request: HttpRequest, collection: Collection) -> None:
        """Through the service: each document's file, and what answers quoted of it, go too."""
        services.delete_collection(
            collection, acting_user=request.user, via=Via.ADMIN, request=request
        )

    @admin.display(description="Documents")
    def document_count(self, obj: Collection) -> int:
        return obj.documents.count()

    @admin.action(description="Re-index the selected collections")
    def reindex(self, request: HttpRequest, queryset: QuerySet[Collection]) -> None:
        count = 0
        for collection in queryset:
            count += services.reindex_collection(
                collection, acting_user=request.user, via=Via.ADMIN, request=request
            )
        self.message_user(request, f"Queued {count} documents for re-indexing.")


class ChunkInline(admin.TabularInline):
    model = Chunk
    fields = ["ordinal", "heading", "page_start", "page_end", "token_count", "text"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    max_num = 0

    def get_queryset(self, request):
        return super().get_queryset(request).defer("embedding")


@admin.register(Document)
class DocumentAdmin(ActionPermissionMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "collection",
        "status",
        "chunk_count",
        "page_count",
        "size",
        "created_at",
    ]
    # Only collections that hold a listed document: no names of collections the user cannot read.
    list_filter = ["status", ("collection", admin.RelatedOnlyFieldListFilter), "content_type"]
    search_fields = ["title", "original_name", "sha256", "error"]
    readonly_fields = [
        "collection",
        "file",
        "original_name",
        "content_type",
        "size",
        "sha256",
        "status",
        "error",
        "page_count",
        "chunk_count",
        "attempts",
        "uploaded_by",
        "created_at",
        "updated_at",
        "processing_started_at",
        "processed_at",
    ]
    fields = ["title", *readonly_fields]
    inlines = [ChunkInline]
    actions = ["retry", "delete_documents"]
    action_permissions = {"retry": "change", "delete_documents": "delete"}
    change_list_template = "admin/ingestion/document/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Document]:
        return (
            super()
            .get_queryset(request)
            .filter(collection__in=permissions.managed_collections(request.user))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # uploads go through the upload view, which validates and queues

    def may_upload(self, request: HttpRequest) -> bool:
        return request.user.has_perm("ingestion.add_document")

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deletion must go through the service
        return actions

    def delete_model(self, request, obj: Document) -> None:
        # Django's delete view has checked has_delete_permission already.
        self._delete(request, obj)

    def _delete(self, request: HttpRequest, document: Document) -> None:
        services.delete_document(document, acting_user=request.user, via=Via.ADMIN, request=request)

    @admin.action(description="Retry (re-ingest) the selected documents")
    def retry(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        count = services.reingest(
            list(queryset), acting_user=request.user, via=Via.ADMIN, request=request
        )
        self.message_user(request, f"Queued {count} documents.")

    @admin.action(description="Delete the selected documents, their files, chunks and embeddings")
    def delete_documents(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        count = 0
        for document in queryset:
            self._delete(request, document)
            count += 1
        self.message_user(request, f"Deleted {count} documents.")

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "may_upload": self.may_upload(request)}
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        upload = path(
            "upload/",
            self.admin_site.admin_view(self.upload_view),
            name="ingestion_document_upload",
        )
        return [upload, *super().get_urls()]

    def upload_view(self, request: HttpRequest):
        if not self.may_upload(request):
            raise PermissionDenied
        form = UploadForm(request.POST or None, request.FILES or None, user=request.user)
        if request.method == "POST" and form.is_valid():
            collection = form.cleaned_data["collection"]
            for outcome in services.register_uploads(
                collection, form.cleaned_data["files"], request.user, via=Via.ADMIN, request=request
            ):
                if outcome.rejected is not None:
                    messages.error(request, f"Rejected: {outcome.rejected}")
                elif outcome.result is not None and outcome.result.created:
                    messages.success(request, f"Queued: {outcome.filename}")
                else:
                    messages.warning(
                        request, f"{outcome.filename}: already in {collection} (same content)."
                    )
            return redirect(reverse("admin:ingestion_document_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "Upload documents",
            "opts": self.model._meta,
        }
        return render(request, "admin/ingestion/document/upload.html", context)
