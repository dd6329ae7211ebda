"""The staff web UI: chat, conversations, citations and the user's API keys."""

from django.urls import path

from retrieval.web import chat, keys, sources

app_name = "web"
urlpatterns = [
    path("", chat.chat, name="chat"),
    path("c/<int:pk>/", chat.chat, name="conversation"),
    path("c/<int:pk>/rename/", chat.rename_conversation, name="rename"),
    path("c/<int:pk>/delete/", chat.delete_conversation, name="delete"),
    path("conversations/", chat.conversation_list, name="conversations"),
    path("ask/", chat.ask, name="ask"),
    path("m/<int:pk>/", chat.message_fragment, name="message"),
    path("m/<int:pk>/feedback/", chat.feedback, name="feedback"),
    path("m/<int:message_id>/sources/<int:number>/", sources.source, name="source"),
    path("documents/<int:pk>/download/", sources.download, name="download"),
    path("keys/", keys.api_keys, name="keys"),
    path("keys/<int:pk>/revoke/", keys.revoke_api_key, name="revoke_key"),
]
