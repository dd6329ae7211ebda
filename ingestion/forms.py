"""Forms of the upload console: create a collection, choose which models may read it.

Validation of uploaded files is not here: services.register_upload checks them at the boundary.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth.models import Group

from core import endpoints
from ingestion.models import Collection

SENSITIVITY_HELP = (
    "Which models may read its passages. In-house only: never an external (hosted) model. "
    "Redacted: an approved external model, after names, e-mail addresses, phone numbers and "
    "the like are replaced. Shareable: an approved external model, as is."
)


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
        fields = ["name", "description", "visibility", "sensitivity", "reader_groups"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}
        labels = {"sensitivity": "Models that may read it"}
        help_texts = {"sensitivity": SENSITIVITY_HELP}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["sensitivity"].required = False  # left out: in-house only

    def clean_sensitivity(self) -> str:
        return self.cleaned_data.get("sensitivity") or Collection.Sensitivity.IN_HOUSE


def answer_model_choices() -> list[tuple[str, str]]:
    """The configured answer endpoints, external ones marked; blank: the first in-house one.
    A configuration error (core.endpoints refuses it) leaves only the default to choose."""
    choices = [("", "The default (first in-house model)")]
    try:
        answering = endpoints.with_role(endpoints.ANSWER)
    except endpoints.EndpointConfigurationError:
        return choices
    for endpoint in answering:
        where = "external" if endpoint.external else "in-house"
        choices.append((endpoint.name, f"{endpoint.label or endpoint.name} ({where})"))
    return choices


class CollectionSharingForm(forms.Form):
    """A collection's sensitivity and default answer model (services.set_collection_sharing)."""

    sensitivity = forms.ChoiceField(
        choices=Collection.Sensitivity.choices,
        label="Models that may read it",
        help_text=SENSITIVITY_HELP,
    )
    default_model = forms.ChoiceField(
        choices=(),
        required=False,
        label="Default answer model",
        help_text="Who asks may pick another model the collection allows, question by question.",
    )

    def __init__(self, *args, **kwargs):
        # Ids of their own: the console page also holds the new-collection form's sensitivity.
        kwargs.setdefault("auto_id", "id_sharing_%s")
        super().__init__(*args, **kwargs)
        choices = answer_model_choices()
        initial = self.initial.get("default_model")
        if initial and initial not in dict(choices):  # configured once, gone since: keep it visible
            choices.append((initial, f"{initial} (not configured)"))
        field = self.fields["default_model"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = choices
