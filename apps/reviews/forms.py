from __future__ import annotations

from django import forms

from apps.core.input_validation import TextField
from apps.reviews.services import NOTE_MAX


class SignoffForm(forms.Form):
    """Marking a review done: an optional note, and the digest of the review as the page showed it."""

    note = TextField(
        multiline=True,
        required=False,
        max_length=NOTE_MAX,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What you checked, what you followed up (optional).",
    )
    digest = forms.RegexField(
        regex=r"^[0-9a-f]{64}$",
        widget=forms.HiddenInput(),
        error_messages={
            "required": "The form lost the review's digest; reload the page.",
            "invalid": "The form's review digest is malformed; reload the page.",
        },
    )
