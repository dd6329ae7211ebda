"""API shapes of collections and documents, and validation of their requests.

Translation only: which rows a user may see is decided in ingestion.permissions, by the views.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ingestion import pipeline
from ingestion.models import Collection, Document


class CollectionSerializer(serializers.ModelSerializer):
    document_count = serializers.IntegerField(read_only=True)
    can_manage = serializers.SerializerMethodField()

    class Meta:
        model = Collection
        fields = [
            "id",
            "name",
            "description",
            "visibility",
            "document_count",
            "can_manage",
            "created_at",
        ]
        read_only_fields = fields

    def get_can_manage(self, collection: Collection) -> bool:
        """Whether the caller may upload to and delete from it (ids computed once per request)."""
        return collection.pk in self.context.get("managed_ids", set())


class CollectionCreateSerializer(serializers.ModelSerializer):
    name = serializers.CharField(max_length=200, trim_whitespace=True)

    class Meta:
        model = Collection
        fields = ["name", "description", "visibility"]
        extra_kwargs = {"description": {"required": False, "max_length": 5000}}

    def validate_name(self, value: str) -> str:
        if "\x00" in value:
            raise serializers.ValidationError("A name cannot contain NUL characters.")
        if Collection.objects.filter(name__iexact=value).exists():
            raise serializers.ValidationError("A collection with this name already exists.")
        return value

    def validate_description(self, value: str) -> str:
        if "\x00" in value:
            raise serializers.ValidationError("A description cannot contain NUL characters.")
        return value


class ProgressSerializer(serializers.Serializer):
    stage = serializers.ChoiceField(choices=Document.Stage.choices)
    done = serializers.IntegerField(help_text="Chunks embedded so far (embedding, storing).")
    total = serializers.IntegerField(help_text="Chunks of the document (0 before chunking).")


class DocumentSerializer(serializers.ModelSerializer):
    collection_name = serializers.CharField(source="collection.name", read_only=True)
    progress = serializers.SerializerMethodField(
        help_text="While processing: the stage and chunks embedded of all; null otherwise."
    )

    class Meta:
        model = Document
        fields = [
            "id",
            "collection",
            "collection_name",
            "title",
            "original_name",
            "content_type",
            "size",
            "sha256",
            "status",
            "error",
            "page_count",
            "chunk_count",
            "attempts",
            "progress",
            "created_at",
            "updated_at",
            "processed_at",
        ]
        read_only_fields = fields

    @extend_schema_field(ProgressSerializer(allow_null=True))
    def get_progress(self, document: Document) -> dict | None:
        progress = pipeline.progress_of(document)
        return None if progress is None else ProgressSerializer(progress).data


class UploadedDocumentSerializer(DocumentSerializer):
    created = serializers.BooleanField(
        read_only=True, help_text="False: the same bytes were already in this collection."
    )

    class Meta(DocumentSerializer.Meta):
        fields = [*DocumentSerializer.Meta.fields, "created"]
        read_only_fields = fields


class RejectedFileSerializer(serializers.Serializer):
    filename = serializers.CharField()
    code = serializers.ChoiceField(choices=["too_large", "unsupported_type", "empty"])
    message = serializers.CharField()


class UploadResultSerializer(serializers.Serializer):
    documents = UploadedDocumentSerializer(many=True)
    rejected = RejectedFileSerializer(many=True)


class DocumentUploadSerializer(serializers.Serializer):
    collection = serializers.IntegerField(
        min_value=1, max_value=2**63 - 1, help_text="Id of a collection you manage."
    )
    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True, use_url=False),
        allow_empty=False,
        max_length=500,
        help_text="One or more files (repeat the multipart field).",
    )


class DocumentFilterSerializer(serializers.Serializer):
    collection = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    status = serializers.ChoiceField(choices=Document.Status.choices, required=False)
