"""The Django admin for support: read-only views of conversations, messages and citations, and
the disclosure ledger (which model endpoint received which passage), listed and exported as CSV.
(The audit log and API keys are in core's admin.)
"""

from __future__ import annotations

import io

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from core.admin import ReadOnlyAdmin
from core.audit import Via
from retrieval import services
from retrieval.models import Citation, Conversation, Disclosure, Message


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["created_at", "role", "content", "outcome", "feedback"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    """Support may read a conversation and delete it on its owner's request."""

    list_display = ["id", "user", "title", "collection", "message_count", "updated_at"]
    list_filter = [("updated_at", admin.DateFieldListFilter)]
    search_fields = ["user__username", "title"]
    readonly_fields = ["user", "title", "collection", "created_at", "updated_at"]
    list_select_related = ["user", "collection"]
    inlines = [MessageInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return super().get_queryset(request).annotate(messages_count=Count("messages"))

    @admin.display(description="messages", ordering="messages_count")
    def message_count(self, conversation: Conversation) -> int:
        return conversation.messages_count


class CitationInline(admin.TabularInline):
    model = Citation
    fields = ["number", "document", "document_title", "page", "heading", "score"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "conversation",
        "role",
        "short_content",
        "outcome",
        "feedback",
        "created_at",
    ]
    list_filter = ["role", "outcome", "feedback", "generator"]
    search_fields = ["content", "conversation__user__username"]
    readonly_fields = [f.name for f in Message._meta.fields]
    list_select_related = ["conversation"]
    inlines = [CitationInline]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # delete the conversation instead: a thread with holes misleads

    @admin.display(description="content")
    def short_content(self, message: Message) -> str:
        return message.content[:80] + ("…" if len(message.content) > 80 else "")

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [*self.readonly_fields, "sent_to_models"]

    @admin.display(description="sent to models (disclosure ledger)")
    def sent_to_models(self, message: Message) -> str:
        """Per answer: which endpoint received which passage, redacted or not."""
        rows = Disclosure.objects.filter(message_id=message.pk).order_by("id")
        if not rows:
            return "nothing (no model call carried passages)"
        return format_html(
            "<table><tr><th>endpoint</th><th>location</th><th>role</th><th>chunk</th>"
            "<th>document</th><th>collection</th><th>sensitivity</th><th>redacted</th></tr>{}"
            "</table>",
            format_html_join(
                "",
                "<tr><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                "<td>{}</td><td>{}</td></tr>",
                (
                    (
                        r.endpoint,
                        r.host or "in process",
                        r.location,
                        r.role,
                        r.chunk_id,
                        r.document_id,
                        r.collection_id,
                        r.sensitivity,
                        "yes" if r.redacted else "no",
                    )
                    for r in rows
                ),
            ),
        )


@admin.register(Citation)
class CitationAdmin(ReadOnlyAdmin):
    list_display = ["id", "message", "number", "document", "document_title", "page"]
    search_fields = ["document_title", "heading"]
    readonly_fields = [f.name for f in Citation._meta.fields]
    list_select_related = ["message", "document"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def ledger_csv(rows: QuerySet[Disclosure], request: HttpRequest) -> HttpResponse:
    """The ledger rows as CSV; the export is itself recorded in the audit log (by the service)."""
    buffer = io.StringIO()
    services.export_disclosures(rows, buffer, user=request.user, via=Via.ADMIN, request=request)
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="disclosures-{stamp}.csv"'
    return response


@admin.register(Disclosure)
class DisclosureAdmin(ReadOnlyAdmin):
    """The disclosure ledger: one row per passage a model call carried. Rows leave it only by
    retention (RAG_RETENTION_DAYS)."""

    list_display = [
        "at",
        "user",
        "message_id",
        "endpoint",
        "location",
        "role",
        "collection_id",
        "document_id",
        "chunk_id",
        "sensitivity",
        "redacted",
    ]
    list_filter = ["location", "endpoint", "role", "sensitivity", "redacted"]
    search_fields = ["user__username", "endpoint", "host"]
    date_hierarchy = "at"
    readonly_fields = [f.name for f in Disclosure._meta.fields]
    list_select_related = ["user"]
    actions = ["export_csv"]
    list_per_page = 100
    show_full_result_count = False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.action(description="Export selected rows as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Disclosure]) -> HttpResponse:
        return ledger_csv(queryset, request)

    def get_urls(self):
        export = path(
            "export/",
            self.admin_site.admin_view(self.export_view),
            name="retrieval_disclosure_export",
        )
        return [export, *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """Every row matching the changelist's filters (same query string)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)
        return ledger_csv(changelist.get_queryset(request), request)
