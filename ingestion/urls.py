"""The admins' upload console (issue #4)."""

app_name = "console"
urlpatterns: list = []
