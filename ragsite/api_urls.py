"""The REST API under /api/v1/ (issue #5)."""

urlpatterns: list = []
