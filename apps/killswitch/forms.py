from __future__ import annotations

from django import forms


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
