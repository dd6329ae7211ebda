"""The Django admin for support: read-only views of conversations, messages and citations.
(The audit log and API keys are in core's admin.)
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from core.admin import ReadOnlyAdmin
from retrieval.models import Citation, Conversation, Message


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
