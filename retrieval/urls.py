"""The staff web UI: chat, conversations, citations (issue #4) and the user's API keys (#5)."""

from django.urls import path

from retrieval import views

app_name = "web"
urlpatterns = [
    path("", views.chat, name="chat"),
    path("c/<int:pk>/", views.chat, name="conversation"),
    path("c/<int:pk>/rename/", views.rename_conversation, name="rename"),
    path("c/<int:pk>/delete/", views.delete_conversation, name="delete"),
    path("conversations/", views.conversation_list, name="conversations"),
    path("ask/", views.ask, name="ask"),
    path("m/<int:pk>/", views.message_fragment, name="message"),
    path("m/<int:pk>/feedback/", views.feedback, name="feedback"),
    path("m/<int:message_id>/sources/<int:number>/", views.source, name="source"),
    path("documents/<int:pk>/download/", views.download, name="download"),
    path("keys/", views.api_keys, name="keys"),
    path("keys/<int:pk>/revoke/", views.revoke_api_key, name="revoke_key"),
]
