"""URL routes: the admin, sign-in, the web UI, the upload console and the API."""

from django.contrib import admin
from django.urls import include, path

from retrieval import quality

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("console/quality/", quality.quality, name="quality"),
    path("console/quality/<int:pk>/", quality.quality_run, name="quality_run"),
    path("console/", include("ingestion.urls")),
    path("api/v1/", include("ragsite.api_urls")),
    path("", include("retrieval.urls")),
]
