"""The staff web UI: chat, conversations, citations (issue #4)."""

app_name = "web"
urlpatterns: list = []
