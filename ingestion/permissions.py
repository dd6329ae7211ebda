"""Who may read and who may change a collection: the one place these rules are written.

Search, citations, downloads, conversations, counters and the API all ask here; the search SQL
takes `readable_collection_ids` as a parameter, so the filter runs before ranking.

The rules: nobody signed out or deactivated reads anything; a superuser reads everything; others
read a collection that is visible to everyone signed in, or lists them, one of their groups, or
them as a manager. A collection's managers, and staff who may read it, may upload to it and
delete from it (superusers: every collection).
Rules are evaluated on every call, never cached: revoking a grant takes effect at once.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q, QuerySet

from ingestion.models import Collection, Document


def readable_collections(user: User | AnonymousUser) -> QuerySet[Collection]:
    """Collections `user` may read: everyone-visible ones, ones granted to the user or a group."""
    if not user or not user.is_authenticated or not user.is_active:
        return Collection.objects.none()
    if user.is_superuser:
        return Collection.objects.all()
    rule = (
        Q(visibility=Collection.Visibility.EVERYONE)
        | Q(reader_users=user)
        | Q(reader_groups__in=user.groups.all())
        | Q(managers=user)
    )
    return Collection.objects.filter(pk__in=Collection.objects.filter(rule).values("pk"))


def readable_collection_ids(user: User | AnonymousUser) -> list[int]:
    return list(readable_collections(user).values_list("pk", flat=True))


def _is_reader(user: User | AnonymousUser | None) -> bool:
    return bool(user and user.is_authenticated and user.is_active)


def can_read_collection(user: User | AnonymousUser, collection: Collection) -> bool:
    return _is_reader(user) and readable_collections(user).filter(pk=collection.pk).exists()


def readable_documents(user: User | AnonymousUser) -> QuerySet[Document]:
    return Document.objects.filter(collection__in=readable_collections(user))


def can_read_document(user: User | AnonymousUser, document: Document) -> bool:
    return _is_reader(user) and readable_documents(user).filter(pk=document.pk).exists()


def can_manage_document(user: User | AnonymousUser, document: Document) -> bool:
    """Whether `user` may delete or re-ingest `document` (manages its collection)."""
    return managed_collections(user).filter(pk=document.collection_id).exists()


def managed_collections(user: User | AnonymousUser) -> QuerySet[Collection]:
    """Collections `user` may upload to and delete from: a superuser all, other staff those they
    may read, managers their own (which they read). Managing implies reading: otherwise a
    console or admin page would show a staff member the names, titles, errors and counts of a
    collection they may not read, and a duplicate upload would tell them a file is there."""
    if not user or not user.is_authenticated or not user.is_active:
        return Collection.objects.none()
    if user.is_superuser:
        return Collection.objects.all()
    if user.is_staff:
        return readable_collections(user)
    return Collection.objects.filter(managers=user)


def can_manage_collection(user: User | AnonymousUser, collection: Collection) -> bool:
    return managed_collections(user).filter(pk=collection.pk).exists()


def can_create_collections(user: User | AnonymousUser) -> bool:
    return bool(
        user and user.is_authenticated and user.is_active and (user.is_staff or user.is_superuser)
    )
