from __future__ import annotations

import unicodedata

from django import forms

from apps.alerts.services import ack_note_problem


def _refuse_invisible(value: str, what: str) -> str:
    # NUL is refused by every CharField already; other control characters, bidirectional overrides and
    # zero-width characters would be stored and shown back, and can disguise an address.
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            raise forms.ValidationError(
                f"The {what} contains an invisible or control character (U+{ord(char):04X}); type it as plain text."
            )
    return value


class AlertWebhookForm(forms.Form):
    # The address is validated by the service (http/https only), so a bad one gets one clear message.
    url = forms.CharField(
        label="Receiver URL", max_length=500,
        help_text="Where alerts are posted as JSON, e.g. https://alerts.example.com/botconsole. It is stored in "
        "the database and shown here: do not put a token in it, use the signing secret.",
    )  # fmt: skip
    # Write-only: PasswordInput never renders a value, so the secret is not echoed back even after an error.
    secret = forms.CharField(
        label="Signing secret", required=False, max_length=500, strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="At least 16 characters; the receiver checks each alert's signature with it. Stored in Vault "
        "only and never shown again. Leave empty to keep the current one.",
    )  # fmt: skip

    def clean_url(self) -> str:
        return _refuse_invisible(str(self.cleaned_data["url"]), "address")

    def clean_secret(self) -> str:
        return _refuse_invisible(str(self.cleaned_data["secret"]), "signing secret")


class AlertAcknowledgeForm(forms.Form):
    """An acknowledgement's note: optional, one line of plain text (it goes into the audit log)."""

    # No max_length here: the service's check gives the one message (with the length) for too long a note.
    note = forms.CharField(label="Note", required=False, strip=True)

    def clean_note(self) -> str:
        note = str(self.cleaned_data["note"])
        problem = ack_note_problem(note)
        if problem is not None:
            raise forms.ValidationError(problem)
        return note
