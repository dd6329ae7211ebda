"""The Django admin for what core keeps: the audit log (read-only, filtered, exported as CSV),
API keys (shown by prefix, revocable), and the SSO identities and groups (shown; core.sso)."""

from __future__ import annotations

import io

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from core import apikeys, audit
from core.audit import Via
from core.models import ApiKey, AuditEvent, SsoGroup, SsoIdentity


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the application only: the admin shows them, never edits them."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def csv_response(events: QuerySet[AuditEvent], request: HttpRequest) -> HttpResponse:
    buffer = io.StringIO()
    audit.export_csv(
        events.select_related(None).order_by("at", "id"),
        buffer,
        user=request.user,
        via=Via.ADMIN,
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
            name="core_auditevent_export",
        )
        return [export, *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """Every event matching the changelist's current filters and search (same query string:
        /admin/core/auditevent/export/?action__exact=ask&q=alice)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)
        return csv_response(changelist.get_queryset(request), request)


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
        if not request.user.has_perm("core.change_apikey"):
            actions.pop("revoke", None)
        return actions

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(
            apikeys.revoke_key(key, revoked_by=request.user, via=Via.ADMIN, request=request)
            for key in queryset.select_related("user")
        )
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)


@admin.register(SsoIdentity)
class SsoIdentityAdmin(ReadOnlyAdmin):
    """Which provider account each SSO user signs in with. Deleting a row unlinks it: that
    account's next sign-in creates a new user."""

    list_display = ["user", "subject", "issuer", "created_at"]
    search_fields = ["user__username", "subject"]
    list_select_related = ["user"]


@admin.register(SsoGroup)
class SsoGroupAdmin(ReadOnlyAdmin):
    """The groups the provider's groups claim manages (core.sso.sync_groups): made by the sync."""

    list_display = ["group", "created_at"]
    list_select_related = ["group"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # the next sign-in whose claim names the group would mark it again
