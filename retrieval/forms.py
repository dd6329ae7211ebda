"""Forms of the staff web UI: ask a question, rename a conversation, give feedback.

They only validate input; the views pass cleaned values to retrieval.answering and services.
"""

from __future__ import annotations

from django import forms

from retrieval.limits import MAX_QUESTION_CHARS


class AskForm(forms.Form):
    question = forms.CharField(max_length=MAX_QUESTION_CHARS, strip=True)
    conversation = forms.IntegerField(required=False, min_value=1)
    collection = forms.IntegerField(required=False, min_value=1)
    model = forms.CharField(required=False, max_length=100, strip=True)  # an answer endpoint


class RenameForm(forms.Form):
    title = forms.CharField(max_length=200, strip=True)


class FeedbackForm(forms.Form):
    value = forms.TypedChoiceField(choices=[("1", "up"), ("0", "none"), ("-1", "down")], coerce=int)
    comment = forms.CharField(required=False, max_length=2000, strip=True)
