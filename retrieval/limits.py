"""Limits on what people send, each written once: the answerer, the web form, the API's
serializers and the chat page's textarea all read them from here."""

MAX_QUESTION_CHARS = 4000
