"""URL routes: the admin, sign-in (password and SSO), the web UI, the upload console, the API,
and the operations endpoints (health, readiness, Prometheus metrics)."""

from django.contrib import admin
from django.urls import include, path

from core import sso_views
from ragsite import ops
from retrieval import quality

urlpatterns = [
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/login/", sso_views.LoginView.as_view(), name="login"),  # + "Sign in with …"
    path("accounts/oidc/", include(sso_views.urlpatterns)),
    path("accounts/", include("django.contrib.auth.urls")),
    path("console/quality/", quality.quality, name="quality"),
    path("console/quality/<int:pk>/", quality.quality_run, name="quality_run"),
    path("console/", include("ingestion.urls")),
    path("api/v1/", include("ragsite.api_urls")),
    path("", include("retrieval.urls")),
]

handler500 = "ragsite.errors.server_error"  # 503 when the connection pool is exhausted
