"""API errors: one JSON shape for every failure, its status codes, and their schema.

Every error body is {"error": {"code": str, "message": str, "fields"?: {name: [str]}}}.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import (
    RequestDataTooBig,
    SuspiciousMultipartForm,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class UploadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "The file is larger than the upload limit."


class UnsupportedFileType(exceptions.APIException):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    default_code = "unsupported_type"
    default_detail = "This file type is not supported."


class EmptyUpload(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "empty"
    default_detail = "The file is empty."


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "The request body is larger than the server accepts."


class ModelUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "model_unavailable"
    default_detail = "The language model is unavailable; try again shortly."


class AnswerFailed(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "answer_failed"
    default_detail = "The answer could not be produced; try again shortly."


# DRF's own codes, renamed where ours read better to a client author.
_CODE_NAMES = {"throttled": "rate_limited", "unsupported_media_type": "unsupported_media_type"}


def error_body(code: str, message: str, fields: dict[str, list[str]] | None = None) -> dict:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """Nested serializer errors as {"messages.0.content": ["…"]}."""
    if isinstance(detail, dict):
        flat: dict[str, list[str]] = {}
        for key, value in detail.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(detail, list) and any(isinstance(item, dict | list) for item in detail):
        flat = {}
        for index, value in enumerate(detail):
            if value:
                flat.update(_flatten(value, f"{prefix}.{index}" if prefix else str(index)))
        return flat
    items = detail if isinstance(detail, list) else [detail]
    return {prefix or "non_field_errors": [str(item) for item in items]}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler (headers, rollback) with the body rewritten to our shape. Unexpected
    exceptions are left to Django, which logs them and answers 500."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        exc = RequestTooLarge()
    elif isinstance(exc, TooManyFieldsSent | TooManyFilesSent | SuspiciousMultipartForm):
        # Django's request parsing limits: too many files or fields, a malformed multipart body.
        exc = exceptions.ParseError(str(exc) or "The request could not be read.")
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        general = fields.pop("non_field_errors", None)
        message = general[0] if general else "The request is invalid; see fields."
        response.data = error_body("invalid", message, fields)
        return response
    detail = exc.detail
    if isinstance(detail, dict | list):  # an APIException raised with structured detail
        response.data = error_body(exc.default_code, "The request failed.", _flatten(detail))
        return response
    code = getattr(detail, "code", None) or exc.default_code
    # An exception may carry per-item reasons (e.g. each refused file of an upload).
    response.data = error_body(
        _CODE_NAMES.get(code, code), str(detail), getattr(exc, "fields", None)
    )
    return response


# --- schema ------------------------------------------------------------------------------------
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Stable machine-readable code, e.g. invalid, not_found, "
                    "rate_limited, too_large, unsupported_type, model_unavailable.",
                },
                "message": {"type": "string", "description": "Fit to show a person."},
                "fields": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    "description": "Per-field messages (400 only); nested fields are dotted.",
                },
                "type": {
                    "type": "string",
                    "description": "OpenAI-compatible endpoints only: the OpenAI error type.",
                },
            },
        }
    },
}

_DESCRIPTIONS = {
    "400": "Invalid request; `error.fields` says which fields and why.",
    "401": "No credentials, or an invalid or revoked API key.",
    "403": "Authenticated, but not allowed to do this.",
    "404": "No such object, or not one you may read.",
    "405": "Method not allowed.",
    "413": "A file is larger than the upload limit.",
    "415": "Unsupported file or request content type.",
    "429": "Rate limit exceeded; see Retry-After.",
    "503": "The language model is unavailable.",
}


def add_error_responses(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: document the error shape on every operation."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        public_schema = path.rstrip("/").endswith(("/schema", "/docs", "/redoc"))
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            codes = ["400", "401", "403", "404", "405", "429"]
            if method in {"post", "put", "patch"}:
                codes.append("415")
            if public_schema:
                codes = ["400", "404", "405"]
            codes += operation.pop("x-extra-errors", [])
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(
                    code,
                    {
                        "description": _DESCRIPTIONS[code],
                        "content": {"application/json": {"schema": ref}},
                    },
                )
    return result
