"""Forms of the upload console: create a collection.

Validation of uploaded files is not here: services.register_upload checks them at the boundary.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth.models import Group

from ingestion.models import Collection


class CollectionForm(forms.ModelForm):
    reader_groups = forms.ModelMultipleChoiceField(
        queryset=Group.objects.order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Reader groups",
        help_text="Used when visibility is restricted: members of these groups may ask about it.",
    )

    class Meta:
        model = Collection
        fields = ["name", "description", "visibility", "reader_groups"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}
