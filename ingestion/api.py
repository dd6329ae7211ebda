"""REST endpoints for collections and documents: list, get, upload, delete, retry.

Every query starts from ingestion.permissions, so objects a caller may not read answer 404.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import Count, QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api_errors import EmptyUpload, UnsupportedFileType, UploadTooLarge
from core.audit import Via
from ingestion import permissions, services
from ingestion.models import Collection, Document
from ingestion.serializers import (
    CollectionCreateSerializer,
    CollectionSerializer,
    DocumentFilterSerializer,
    DocumentSerializer,
    DocumentUploadSerializer,
    UploadResultSerializer,
)

_REJECTIONS = {"too_large": UploadTooLarge, "unsupported_type": UnsupportedFileType}


def _readable_collections(user: User) -> QuerySet[Collection]:
    return (
        permissions.readable_collections(user)
        .annotate(document_count=Count("documents"))
        .order_by("name", "id")
    )


def _managed_ids(user: User) -> set[int]:
    return set(permissions.managed_collections(user).values_list("pk", flat=True))


@extend_schema(tags=["collections"])
class CollectionListView(generics.ListCreateAPIView):
    """Collections you may read (GET); create one (POST, administrators only)."""

    serializer_class = CollectionSerializer
    parser_classes = [JSONParser]

    def get_queryset(self) -> QuerySet[Collection]:
        return _readable_collections(self.request.user)

    def get_serializer_context(self) -> dict:
        return {**super().get_serializer_context(), "managed_ids": _managed_ids(self.request.user)}

    @extend_schema(
        request=CollectionCreateSerializer,
        responses={201: CollectionSerializer},
        summary="Create a collection (administrators only)",
    )
    def post(self, request: Request) -> Response:
        if not permissions.can_create_collections(request.user):
            raise exceptions.PermissionDenied("Only administrators may create collections.")
        incoming = CollectionCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        collection = services.create_collection(
            request.user,
            incoming.validated_data["name"],
            description=incoming.validated_data.get("description", ""),
            visibility=incoming.validated_data.get("visibility", Collection.Visibility.RESTRICTED),
            via=Via.API,
            request=request._request,
        )
        collection = _readable_collections(request.user).get(pk=collection.pk)
        return Response(self.get_serializer(collection).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["collections"])
class CollectionDetailView(generics.RetrieveAPIView):
    """One collection you may read, with its document count."""

    serializer_class = CollectionSerializer

    def get_queryset(self) -> QuerySet[Collection]:
        return _readable_collections(self.request.user)

    def get_serializer_context(self) -> dict:
        return {**super().get_serializer_context(), "managed_ids": _managed_ids(self.request.user)}


@extend_schema(tags=["documents"])
class DocumentListView(generics.ListAPIView):
    """Documents you may read, newest first; filter by collection and status. POST uploads."""

    serializer_class = DocumentSerializer
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self) -> QuerySet[Document]:
        filters = DocumentFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        documents = (
            permissions.readable_documents(self.request.user)
            .select_related("collection")
            .order_by("-created_at", "-id")
        )
        if "collection" in filters.validated_data:
            documents = documents.filter(collection_id=filters.validated_data["collection"])
        if "status" in filters.validated_data:
            documents = documents.filter(status=filters.validated_data["status"])
        return documents

    @extend_schema(parameters=[DocumentFilterSerializer])
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request={"multipart/form-data": DocumentUploadSerializer},
        responses={201: UploadResultSerializer},
        summary="Upload one or more files into a collection you manage",
        description=(
            "Each file is validated, stored and queued for ingestion; poll the document for its "
            "status. Files already in the collection (same bytes) come back with created=false. "
            "When every file is refused, the answer is the first refusal's error: 413 too_large, "
            "415 unsupported_type or 400 empty, with each file's reason in error.fields."
        ),
        extensions={"x-extra-errors": ["413"]},
    )
    def post(self, request: Request) -> Response:
        incoming = DocumentUploadSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        collection = (
            permissions.readable_collections(request.user)
            .filter(pk=incoming.validated_data["collection"])
            .first()
        )
        if collection is None:
            raise exceptions.ValidationError({"collection": ["No such collection."]})
        if not permissions.can_manage_collection(request.user, collection):
            raise exceptions.PermissionDenied("You may not upload to this collection.")
        uploaded, rejected = [], []
        for outcome in services.register_uploads(
            collection,
            incoming.validated_data["files"],
            request.user,
            via=Via.API,
            request=request._request,
        ):
            if outcome.rejected is not None:
                rejected.append(
                    {
                        "filename": services.clean_filename(outcome.filename),
                        "code": outcome.rejected.code,
                        "message": str(outcome.rejected),
                    }
                )
            elif outcome.result is not None:
                outcome.result.document.created = outcome.result.created
                uploaded.append(outcome.result.document)
        if not uploaded:
            first = rejected[0]
            error = _REJECTIONS.get(first["code"], EmptyUpload)(first["message"])
            error.fields = {f"files.{i}": [r["message"]] for i, r in enumerate(rejected)}
            raise error
        body = UploadResultSerializer({"documents": uploaded, "rejected": rejected}).data
        return Response(body, status=status.HTTP_201_CREATED)


@extend_schema(tags=["documents"])
class DocumentDetailView(generics.RetrieveDestroyAPIView):
    """A document's status and counts (GET); delete it with its chunks and embeddings (DELETE)."""

    serializer_class = DocumentSerializer

    def get_queryset(self) -> QuerySet[Document]:
        return permissions.readable_documents(self.request.user).select_related("collection")

    def perform_destroy(self, document: Document) -> None:
        if not permissions.can_manage_collection(self.request.user, document.collection):
            raise exceptions.PermissionDenied("You may not delete from this collection.")
        services.delete_document(
            document, acting_user=self.request.user, via=Via.API, request=self.request._request
        )


@extend_schema(tags=["documents"])
class DocumentRetryView(APIView):
    """Queue a document to be processed again (after a failure, or to re-index it)."""

    @extend_schema(request=None, responses={202: DocumentSerializer})
    def post(self, request: Request, pk: int) -> Response:
        document = (
            permissions.readable_documents(request.user)
            .select_related("collection")
            .filter(pk=pk)
            .first()
        )
        if document is None:
            raise exceptions.NotFound("No such document.")
        if not permissions.can_manage_collection(request.user, document.collection):
            raise exceptions.PermissionDenied("You may not re-ingest documents of this collection.")
        services.reingest(
            [document], acting_user=request.user, via=Via.API, request=request._request
        )
        document.refresh_from_db()
        return Response(DocumentSerializer(document).data, status=status.HTTP_202_ACCEPTED)
