"""The Django admin for support: the audit log (read-only, filtered, exported as CSV) and
read-only views of conversations, messages, citations and API keys (keys can be revoked).
"""

from __future__ import annotations

import io

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from retrieval import apikeys, audit
from retrieval.models import ApiKey, AuditEvent, Citation, Conversation, Message


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the application only: the admin shows them, never edits them."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def csv_response(events: QuerySet[AuditEvent], request: HttpRequest) -> HttpResponse:
    buffer = io.StringIO()
    count = audit.write_csv(events.select_related(None).order_by("at", "id"), buffer)
    # Exporting the log is itself worth a line in it.
    audit.record(
        AuditEvent.Action.AUDIT_EXPORT,
        user=request.user,
        via="admin",
        detail={"rows": count},
        request=request,
    )
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
    return response


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "username", "action", "via", "short_question", "document_ids", "ip"]
    list_filter = ["action", "via", ("at", admin.DateFieldListFilter)]
    search_fields = ["username", "question", "ip"]
    date_hierarchy = "at"
    readonly_fields = [f.name for f in AuditEvent._meta.fields]
    actions = ["export_csv"]
    list_per_page = 100
    show_full_result_count = False  # the log grows large; a COUNT(*) per page is wasted work

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # rows leave the log only by retention (manage.py purge_expired)

    @admin.display(description="question")
    def short_question(self, event: AuditEvent) -> str:
        return event.question[:80] + ("…" if len(event.question) > 80 else "")

    @admin.action(description="Export selected events as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> HttpResponse:
        return csv_response(queryset, request)

    def get_urls(self):
        export = path(
            "export/",
            self.admin_site.admin_view(self.export_view),
            name="retrieval_auditevent_export",
        )
        return [export, *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """Every event matching the changelist's current filters and search (same query string:
        /admin/retrieval/auditevent/export/?action__exact=ask&q=alice)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)
        return csv_response(changelist.get_queryset(request), request)


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


@admin.register(Citation)
class CitationAdmin(ReadOnlyAdmin):
    list_display = ["id", "message", "number", "document", "document_title", "page"]
    search_fields = ["document_title", "heading"]
    readonly_fields = [f.name for f in Citation._meta.fields]
    list_select_related = ["message", "document"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    """Keys are shown by prefix only (the key itself is never stored) and can be revoked."""

    list_display = [
        "name",
        "user",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
        "manage_keys",
    ]
    list_filter = [
        ("revoked_at", admin.EmptyFieldListFilter),
        ("last_used_at", admin.DateFieldListFilter),
    ]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    exclude = ["key_hash"]
    list_select_related = ["user"]
    actions = ["revoke"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # revoke instead: the audit log keeps referring to the key

    @admin.display(description="Keys of this user")
    def manage_keys(self, obj: ApiKey) -> str:
        # New keys are made on the web page, which shows the key once; admins act for the user.
        return format_html(
            '<a href="{}?user={}">Create / revoke</a>', reverse("web:keys"), obj.user_id
        )

    def get_actions(self, request: HttpRequest):
        actions = super().get_actions(request)
        # Revoking changes the key, so it needs change permission on API keys, which the
        # read-only admin otherwise withholds: ask the user's real permission instead.
        if not request.user.has_perm("retrieval.change_apikey"):
            actions.pop("revoke", None)
        return actions

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(
            apikeys.revoke_key(key, revoked_by=request.user, request=request)
            for key in queryset.select_related("user")
        )
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
