"""The admins' upload console (issue #4)."""

from django.urls import path

from ingestion import views

app_name = "console"
urlpatterns = [
    path("", views.home, name="home"),
    path("status/", views.status, name="status"),
    path("collections/new/", views.create_collection, name="create_collection"),
    path("collections/<int:pk>/upload/", views.upload, name="upload"),
    path("collections/<int:pk>/reindex/", views.reindex, name="reindex"),
    path("collections/<int:pk>/sharing/", views.sharing, name="sharing"),
    path("documents/<int:pk>/retry/", views.retry, name="retry"),
    path("documents/<int:pk>/delete/", views.delete, name="delete"),
]
