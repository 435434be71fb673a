from __future__ import annotations

from django import forms
from django.core.validators import RegexValidator

from apps.core.input_validation import TextField
from apps.exchanges.port import supported_exchanges

# Exchanges issue keys as printable ASCII, and they travel in HTTP headers, which take nothing else.
_ASCII_KEY = RegexValidator(r"^[\x21-\x7e]*\Z", "Keys and secrets are printable ASCII characters, without spaces.")
_ASCII_PASSPHRASE = RegexValidator(r"^[\x20-\x7e]*\Z", "A passphrase is printable ASCII characters.")


class _CredentialsForm(forms.Form):
    # Write-only: PasswordInput never renders a value, so a key is not echoed back even after an error.
    # Error messages name the problem (a control character's code point, a length), never the value.
    apiKey = TextField(
        label="API key", max_length=512, widget=forms.PasswordInput(render_value=False), validators=[_ASCII_KEY]
    )
    secret = TextField(
        label="API secret", max_length=2048, widget=forms.PasswordInput(render_value=False), validators=[_ASCII_KEY]
    )
    password = TextField(
        label="Passphrase",
        required=False,
        max_length=512,
        widget=forms.PasswordInput(render_value=False),
        validators=[_ASCII_PASSPHRASE],
        help_text="Only for exchanges that issue a passphrase with the key.",
    )
    attest_no_withdrawals = forms.BooleanField(
        required=False,
        label="I confirm withdrawals are disabled for this key on the exchange",
        help_text="Needed only for exchanges whose API cannot tell us (Binance and the sandbox can).",
    )

    def credentials(self) -> dict[str, str]:
        return {k: self.cleaned_data.get(k) or "" for k in ("apiKey", "secret", "password")}


class ExchangeAccountForm(_CredentialsForm):
    label = TextField(max_length=100, name=True)
    exchange_id = forms.ChoiceField(label="Exchange", choices=[])

    field_order = ["label", "exchange_id", "apiKey", "secret", "password", "attest_no_withdrawals"]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        field = self.fields["exchange_id"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(e, "Sandbox (local test exchange)" if e == "sandbox" else e) for e in supported_exchanges()]


class RotateForm(_CredentialsForm):
    pass
