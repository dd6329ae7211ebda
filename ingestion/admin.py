"""The Django admin for collections and documents: multi-file upload, filters, bulk actions.

Uploads go through services.register_upload like every other entry point.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import redirect, render
from django.urls import path, reverse

from ingestion import services
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
    collection = forms.ModelChoiceField(queryset=Collection.objects.all())
    files = MultipleFileField(label="Files")


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    list_display = ["name", "visibility", "document_count", "created_at"]
    search_fields = ["name", "description"]
    filter_horizontal = ["reader_groups", "reader_users", "managers"]
    actions = ["reindex"]

    @admin.display(description="Documents")
    def document_count(self, obj: Collection) -> int:
        return obj.documents.count()

    @admin.action(description="Re-index the selected collections")
    def reindex(self, request: HttpRequest, queryset: QuerySet[Collection]) -> None:
        count = sum(services.reindex_collection(collection) for collection in queryset)
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
class DocumentAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "collection",
        "status",
        "chunk_count",
        "page_count",
        "size",
        "created_at",
    ]
    list_filter = ["status", "collection", "content_type"]
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
    change_list_template = "admin/ingestion/document/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # uploads go through the upload view, which validates and queues

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deletion must go through the service
        return actions

    def delete_model(self, request, obj: Document) -> None:
        services.delete_document(obj)

    @admin.action(description="Retry (re-ingest) the selected documents")
    def retry(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        count = services.reingest(queryset)
        self.message_user(request, f"Queued {count} documents.")

    @admin.action(description="Delete the selected documents, their files, chunks and embeddings")
    def delete_documents(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        count = 0
        for document in queryset:
            services.delete_document(document)
            count += 1
        self.message_user(request, f"Deleted {count} documents.")

    def get_urls(self):
        upload = path(
            "upload/",
            self.admin_site.admin_view(self.upload_view),
            name="ingestion_document_upload",
        )
        return [upload, *super().get_urls()]

    def upload_view(self, request: HttpRequest):
        form = UploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            collection = form.cleaned_data["collection"]
            for uploaded in form.cleaned_data["files"]:
                try:
                    result = services.register_upload(
                        collection, uploaded, uploaded.name, request.user, size_hint=uploaded.size
                    )
                except services.UploadRejected as exc:
                    messages.error(request, f"Rejected: {exc}")
                    continue
                if result.created:
                    messages.success(request, f"Queued: {uploaded.name}")
                else:
                    messages.warning(
                        request, f"{uploaded.name}: already in {collection} (same content)."
                    )
            return redirect(reverse("admin:ingestion_document_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "Upload documents",
            "opts": self.model._meta,
        }
        return render(request, "admin/ingestion/document/upload.html", context)
