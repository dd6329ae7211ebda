"""Write paths for documents and collections: register an upload, re-ingest, requeue stuck
work, delete, create and delete collections.

Every entry point (admin, console, API, manage.py) calls these; validation happens here, at the
boundary, before anything is stored or queued. Each action records itself in the audit log, in its
own transaction, with the acting user and the entry point (`via`) its caller names: entry points
never write audit rows themselves.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.core.files import File
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from core import audit
from core.audit import Action, Via
from ingestion import permissions, pipeline
from ingestion.models import Collection, Document
from ingestion.parsing import SUPPORTED_TYPES, detect_content_type
from ingestion.signals import document_deleted
from ingestion.tasks import ingest_document

logger = logging.getLogger(__name__)
_COPY_BLOCK = 1024 * 1024


class UploadRejected(Exception):
    """An upload refused at the boundary; `code` tells the API which status to answer with."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code  # too_large | unsupported_type | empty


@dataclass(frozen=True)
class UploadResult:
    document: Document
    created: bool  # False: the same bytes were already in this collection


def max_upload_bytes() -> int:
    return settings.RAG_MAX_UPLOAD_MB * 1024 * 1024


def clean_filename(name: str) -> str:
    """A display name safe to show and to offer as a download name."""
    # Normalise first: NFKC turns a fullwidth solidus into "/", which basename must then see.
    name = os.path.basename(unicodedata.normalize("NFKC", name).replace("\\", "/"))
    # Control and format characters: NUL, newlines, and bidi overrides that show "fdp.exe"
    # as "exe.pdf".
    name = "".join(c for c in name if unicodedata.category(c) not in {"Cc", "Cf"})
    name = name.strip().strip(".").strip()
    if len(name) > 255:  # keep the extension: Markdown is told from text by it
        suffix = Path(name).suffix[:20]
        name = name[: 255 - len(suffix)] + suffix
    return name or "unnamed"


def register_upload(
    collection: Collection,
    stream: IO[bytes],
    filename: str,
    uploaded_by: User | None = None,
    size_hint: int | None = None,
    enqueue: bool = True,
    *,
    via: Via = Via.SYSTEM,
    request: HttpRequest | None = None,
) -> UploadResult:
    """Validate, hash and store an uploaded file, then queue it for ingestion after commit
    (`enqueue=False`: the caller runs the pipeline itself, as `manage.py ingest --sync` does).
    `uploaded_by` acts; the upload (or the duplicate found) is audited as coming through `via`.

    Raises UploadRejected for files that are too large, empty, or of an unsupported type.
    """
    limit = max_upload_bytes()
    if size_hint is not None and size_hint > limit:
        raise UploadRejected(
            f"{clean_filename(filename)} is larger than the {settings.RAG_MAX_UPLOAD_MB} MB limit.",
            "too_large",
        )
    # Uploaded files are readable by this service's user only: the folder is made 0700, the
    # file is born 0600 (mkstemp) and moved into place, never created wider and chmod-ed after.
    settings.MEDIA_ROOT.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=settings.MEDIA_ROOT, prefix=".upload-", delete=False
    ) as tmp:
        try:
            return _store(
                collection, stream, tmp, filename, uploaded_by, limit, enqueue, via, request
            )
        finally:
            Path(tmp.name).unlink(missing_ok=True)  # gone already if it became the stored file


def _record_upload(
    result: UploadResult, user: User | None, via: Via, request: HttpRequest | None = None
) -> None:
    audit.record(
        Action.UPLOAD,
        user=user,
        via=via,
        document_ids=[result.document.pk],
        detail={
            "name": result.document.original_name,
            "collection_id": result.document.collection_id,
            "duplicate": not result.created,
        },
        request=request,
    )


class _MovableFile(File):
    """A file Django's storage moves into place (by its path) instead of copying its bytes."""

    def temporary_file_path(self) -> str:
        return self.file.name


def _store(
    collection: Collection,
    stream: IO[bytes],
    tmp: IO[bytes],
    filename: str,
    uploaded_by: User | None,
    limit: int,
    enqueue: bool,
    via: Via,
    request: HttpRequest | None,
) -> UploadResult:
    digest, size = _copy_and_hash(stream, tmp, limit, filename)
    if size == 0:
        raise UploadRejected(f"{clean_filename(filename)} is empty.", "empty")
    tmp.flush()
    content_type = detect_content_type(Path(tmp.name), filename)
    if content_type not in SUPPORTED_TYPES:
        raise UploadRejected(
            f"{clean_filename(filename)}: unsupported file type ({content_type}). "
            f"Supported: {', '.join(sorted(set(SUPPORTED_TYPES.values())))}.",
            "unsupported_type",
        )
    existing = Document.objects.filter(collection=collection, sha256=digest).first()
    if existing is not None:
        result = UploadResult(existing, created=False)
        _record_upload(result, uploaded_by, via, request)
        return result
    tmp.seek(0)
    with transaction.atomic():
        document = Document(
            collection=collection,
            original_name=clean_filename(filename),
            content_type=content_type,
            size=size,
            sha256=digest,
            uploaded_by=uploaded_by,
        )
        document.file.save(clean_filename(filename), _MovableFile(tmp), save=False)
        document.save()
        result = UploadResult(document, created=True)
        _record_upload(result, uploaded_by, via, request)
        if enqueue:
            _enqueue_after_commit(document.pk)
    logger.info("registered document %s (%s, %s bytes)", document.pk, content_type, size)
    return result


@dataclass(frozen=True)
class UploadOutcome:
    """One file of a batch: registered (`result`) or refused (`rejected`, with its reason)."""

    filename: str
    result: UploadResult | None = None
    rejected: UploadRejected | None = None


def register_uploads(
    collection: Collection,
    files: Iterable,
    uploaded_by: User | None = None,
    *,
    via: Via = Via.SYSTEM,
    request: HttpRequest | None = None,
    enqueue: bool = True,
) -> list[UploadOutcome]:
    """Register a batch, file by file: a refused file is reported and the others go on. `files`
    are uploaded files (with `.name` and `.size`, as Django and DRF give them) or paths."""
    outcomes = []
    for item in files:
        name = item.name
        try:
            if isinstance(item, Path):
                result = register_path(collection, item, uploaded_by, enqueue, via=via)
            else:
                result = register_upload(
                    collection,
                    item,
                    name,
                    uploaded_by,
                    size_hint=item.size,
                    enqueue=enqueue,
                    via=via,
                    request=request,
                )
        except UploadRejected as exc:
            outcomes.append(UploadOutcome(name, rejected=exc))
        else:
            outcomes.append(UploadOutcome(name, result=result))
    return outcomes


def register_path(
    collection: Collection,
    path: Path,
    uploaded_by: User | None = None,
    enqueue: bool = True,
    *,
    via: Via = Via.SYSTEM,
) -> UploadResult:
    with path.open("rb") as handle:
        return register_upload(
            collection,
            handle,
            path.name,
            uploaded_by,
            size_hint=path.stat().st_size,
            enqueue=enqueue,
            via=via,
        )


def _copy_and_hash(
    stream: IO[bytes], target: IO[bytes], limit: int, filename: str
) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while block := stream.read(_COPY_BLOCK):
        size += len(block)
        if size > limit:
            raise UploadRejected(
                f"{clean_filename(filename)} is larger than the {settings.RAG_MAX_UPLOAD_MB} MB limit.",
                "too_large",
            )
        digest.update(block)
        target.write(block)
    return digest.hexdigest(), size


def _enqueue_after_commit(document_id: int) -> None:
    transaction.on_commit(lambda: ingest_document.delay(document_id))


def create_collection(
    user: User,
    name: str,
    *,
    description: str = "",
    visibility: str = Collection.Visibility.RESTRICTED,
    reader_groups: Iterable = (),
    sensitivity: str = Collection.Sensitivity.IN_HOUSE,
    via: Via = Via.SYSTEM,
    request: HttpRequest | None = None,
) -> Collection:
    """A new collection, managed by its creator. Only staff may create collections."""
    if not permissions.can_create_collections(user):
        raise PermissionDenied("Only administrators may create collections.")
    with transaction.atomic():
        collection = Collection.objects.create(
            name=name,
            description=description,
            visibility=visibility,
            sensitivity=sensitivity,
            created_by=user,
        )
        collection.reader_groups.set(reader_groups)
        collection.managers.add(user)
        audit.record(
            Action.COLLECTION_CREATED,
            user=user,
            via=via,
            detail={"collection_id": collection.pk, "name": name, "sensitivity": sensitivity},
            request=request,
        )
    return collection


def set_collection_sharing(
    user: User | AnonymousUser,
    collection: Collection,
    *,
    sensitivity: str,
    default_model: str,
    via: Via = Via.SYSTEM,
    request: HttpRequest | None = None,
) -> bool:
    """Set which model endpoints may receive the collection's text (core.endpoints.may_receive
    reads the sensitivity) and the model that answers by default. Staff who manage the collection
    only: loosening it lets passages leave the organisation. Audited with the before and after;
    returns whether anything changed."""
    if not (
        permissions.can_create_collections(user)
        and permissions.can_manage_collection(user, collection)
    ):
        raise PermissionDenied("Only staff who manage this collection may change its models.")
    if sensitivity not in Collection.Sensitivity.values:
        raise ValueError(f"unknown sensitivity {sensitivity!r}")
    with transaction.atomic():
        locked = Collection.objects.select_for_update().get(pk=collection.pk)
        before = {"sensitivity": locked.sensitivity, "default_model": locked.default_model}
        after = {"sensitivity": sensitivity, "default_model": default_model}
        if before == after:
            return False
        Collection.objects.filter(pk=collection.pk).update(**after)
        audit.record(
            Action.COLLECTION_SHARING,
            user=user,
            via=via,
            detail={"collection_id": collection.pk, "before": before, "after": after},
            request=request,
        )
    collection.sensitivity, collection.default_model = sensitivity, default_model
    return True


def get_or_create_collection(
    name: str, *, visibility: str = Collection.Visibility.RESTRICTED, via: Via = Via.SYSTEM
) -> tuple[Collection, bool]:
    """The collection named `name`, created (and audited) when missing; for `manage.py ingest`,
    which has no signed-in user (a person creates collections with create_collection)."""
    with transaction.atomic():
        collection, created = Collection.objects.get_or_create(
            name=name, defaults={"visibility": visibility}
        )
        if created:
            audit.record(
                Action.COLLECTION_CREATED,
                via=via,
                detail={"collection_id": collection.pk, "name": name},
            )
    return collection, created


def reingest(
    documents: Iterable[Document],
    *,
    acting_user: User | None = None,
    via: Via = Via.SYSTEM,
    request: HttpRequest | None = None,
    fresh_attempts: bool = True,
) -> int:
    """Queue documents to be processed again (retry a failure, re-index after a model change).
    Re-ingest replaces a document's chunks in one transaction, so it never duplicates them.

    A person's retry gives a document RAG_MAX_ATTEMPTS fresh attempts; the automatic requeue of
    stuck work (`fresh_attempts=False`) does not, so a file that keeps stopping the worker ends."""
    with transaction.atomic():
        queued = _queue_again(documents, fresh_attempts)
        if queued:
            audit.record(
                Action.REINGEST, user=acting_user, via=via, document_ids=queued, request=request
            )
    return len(queued)


def _queue_again(documents: Iterable[Document], fresh_attempts: bool = True) -> list[int]:
    fields = {"status": Document.Status.QUEUED, "error": ""}
    if fresh_attempts:
        fields["unfinished_runs"] = 0
    queued = []
    for document in documents:
        Document.objects.filter(pk=document.pk).update(**fields)
        _enqueue_after_commit(document.pk)
        queued.append(document.pk)
    return queued


def reindex_collection(
    collection: Collection,
    *,
    acting_user: User | None = None,
    via: Via = Via.SYSTEM,
    request: HttpRequest | None = None,
) -> int:
    """Re-ingest every document of a collection not already waiting (after a model change)."""
    with transaction.atomic():
        queued = _queue_again(collection.documents.exclude(status=Document.Status.QUEUED))
        audit.record(
            Action.REINGEST,
            user=acting_user,
            via=via,
            detail={"collection_id": collection.pk, "documents": len(queued)},
            request=request,
        )
    return len(queued)


def stuck_documents(older_than: timedelta, include_queued: bool = True) -> list[Document]:
    """Documents left `processing` too long or by a process of this machine that no longer
    exists (a killed worker), and, with `include_queued`, `queued` too long (a lost message)."""
    cutoff = timezone.now() - older_than
    stuck = Q(status=Document.Status.PROCESSING, processing_started_at__lte=cutoff)
    if include_queued:
        stuck |= Q(status=Document.Status.QUEUED, updated_at__lte=cutoff)
    found = {document.pk: document for document in Document.objects.filter(stuck)}
    for document in _abandoned_on_this_host():
        found.setdefault(document.pk, document)
    return list(found.values())


def _abandoned_on_this_host() -> list[Document]:
    import psutil

    host = socket.gethostname()
    abandoned = []
    for document in Document.objects.filter(
        status=Document.Status.PROCESSING, claimed_by__startswith=f"{host}:"
    ):
        pid = document.claimed_by.rpartition(":")[2]
        if not pid.isdigit() or not psutil.pid_exists(int(pid)):
            abandoned.append(document)
    return abandoned


def requeue_stuck(
    older_than: timedelta, include_queued: bool = True, *, via: Via = Via.SYSTEM
) -> list[Document]:
    """Queue stuck documents again, except those that already stopped the worker
    RAG_MAX_ATTEMPTS times: they fail with that reason. Returns the documents queued."""
    documents = [
        d for d in stuck_documents(older_than, include_queued) if not pipeline.give_up_on_stuck(d)
    ]
    reingest(documents, via=via, fresh_attempts=False)
    return documents


def requeue_abandoned_documents(sender=None, **kwargs) -> None:
    """When a worker starts (Celery's worker_ready), queue again the documents a dead worker
    left behind.

    kombu's filesystem transport forgets a message once read, and Redis redelivers one only after
    its visibility timeout, so documents claimed by a process of this machine that no longer
    exists are requeued at once (a redelivered duplicate finds the document ready and stops).
    Anything processing for longer than the task time limit is abandoned, wherever it ran. A
    document that already stopped the worker RAG_MAX_ATTEMPTS times fails instead.
    """
    requeued = requeue_stuck(
        timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT), include_queued=False
    )
    if requeued:
        logger.warning("requeued %d documents left processing by a stopped worker", len(requeued))


def delete_document(
    document: Document,
    *,
    acting_user: User | None = None,
    via: Via = Via.SYSTEM,
    request: HttpRequest | None = None,
) -> None:
    """Remove a document everywhere: its stored file, its chunks and embeddings (cascade), and
    what answers and citations kept of its text (the `document_deleted` receivers)."""
    with transaction.atomic():
        audit.record(
            Action.DELETE,
            user=acting_user,
            via=via,
            document_ids=[document.pk],
            detail={"name": document.original_name, "collection_id": document.collection_id},
            request=request,
        )
        _delete_document(document)


def _delete_document(document: Document) -> None:
    document_deleted.send(sender=Document, document=document)
    name = document.file.name
    document.delete()
    if name:
        transaction.on_commit(lambda: document.file.storage.delete(name))


def delete_collection(
    collection: Collection,
    *,
    acting_user: User | None = None,
    via: Via = Via.SYSTEM,
    request: HttpRequest | None = None,
) -> None:
    """Remove a collection and each of its documents as delete_document does; one audit row
    names them all."""
    with transaction.atomic():
        documents = list(collection.documents.all())
        audit.record(
            Action.DELETE,
            user=acting_user,
            via=via,
            document_ids=[document.pk for document in documents],
            detail={"collection_id": collection.pk, "collection": collection.name},
            request=request,
        )
        for document in documents:
            _delete_document(document)
        collection.delete()


def document_titles(ids: set[int]) -> dict[int, str]:
    """Each existing document's title (or file name) by id, for the audit log's CSV."""
    return {
        pk: title or name
        for pk, title, name in Document.objects.filter(pk__in=ids).values_list(
            "pk", "title", "original_name"
        )
    }
