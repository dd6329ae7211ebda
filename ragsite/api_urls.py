"""The REST API under /api/v1/ (issue #5): documents, collections, search, answers,
conversations, API keys, the OpenAI-compatible endpoint, the schema and its docs page (Swagger UI
from drf-spectacular-sidecar's static files: Redoc's template pulls Google Fonts, so it is left out).
The schema and the docs need a signed-in session or an API key (SPECTACULAR_SETTINGS)."""

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core.api_errors import error_body
from ingestion import api as ingestion_api
from retrieval.api import openai, views

_docs_view = SpectacularSwaggerView.as_view(url_name="api-schema")


def docs(request: HttpRequest) -> HttpResponse:
    """The docs page, for signed-in users (its script fetches the schema with the session); a
    browser without a session is sent to sign in rather than shown a JSON error."""
    response = _docs_view(request)
    if response.status_code in (401, 403) and not request.headers.get("Authorization"):
        return redirect_to_login(request.get_full_path())
    return response


@csrf_exempt  # answers 404 to every method; nothing to protect
def not_found(request: HttpRequest, unmatched: str = "") -> JsonResponse:
    """Unknown API paths (or ids that are not numbers) answer in the API's error shape too."""
    return JsonResponse(error_body("not_found", "No such API endpoint."), status=404)


urlpatterns = [
    path("collections/", ingestion_api.CollectionListView.as_view(), name="api-collections"),
    path(
        "collections/<int:pk>/",
        ingestion_api.CollectionDetailView.as_view(),
        name="api-collection",
    ),
    path("documents/", ingestion_api.DocumentListView.as_view(), name="api-documents"),
    path("documents/<int:pk>/", ingestion_api.DocumentDetailView.as_view(), name="api-document"),
    path(
        "documents/<int:pk>/retry/",
        ingestion_api.DocumentRetryView.as_view(),
        name="api-document-retry",
    ),
    path("search", views.SearchView.as_view(), name="api-search"),
    path("ask", views.AskView.as_view(), name="api-ask"),
    path("conversations/", views.ConversationListView.as_view(), name="api-conversations"),
    path(
        "conversations/<int:pk>/",
        views.ConversationDetailView.as_view(),
        name="api-conversation",
    ),
    path("keys/", views.ApiKeyListView.as_view(), name="api-keys"),
    path("keys/<int:pk>/", views.ApiKeyDetailView.as_view(), name="api-key"),
    path("openai/models", openai.ModelListView.as_view(), name="api-openai-models"),
    path("openai/models/<str:model>", openai.ModelDetailView.as_view(), name="api-openai-model"),
    path(
        "openai/chat/completions",
        openai.ChatCompletionView.as_view(),
        name="api-openai-chat-completions",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", docs, name="api-docs"),
    re_path(r"^(?P<unmatched>.*)$", not_found),
]
