"""URL routes: the admin, sign-in, the web UI, the upload console and the API."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("console/", include("ingestion.urls")),
    path("api/v1/", include("ragsite.api_urls")),
    path("", include("retrieval.urls")),
]
