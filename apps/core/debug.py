"""What an error report may show: Django's technical 500 page (DEBUG on) and error mails.

Django's own filter hides settings whose *names* look secret (SECRET_KEY, *_PASSWORD ...), but not
the password inside a URL: REDIS_URL, CELERY_BROKER_URL and CHANNEL_LAYERS carry the Valkey
password, and an exception message or a local variable may carry any URL. Here every credential in
a URL (the user information before the host's "@") is masked wherever it appears, Vault tokens and `key=value`
secrets too (apps.core.logging), and the sensitive_variables / sensitive_post_parameters marks are
honoured even with DEBUG on (Django ignores them then).
"""

from __future__ import annotations

import re
from pprint import pformat
from types import FrameType
from typing import Any

from django.http import HttpRequest
from django.utils.datastructures import MultiValueDict
from django.utils.safestring import SafeString, mark_safe
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

from apps.core.logging import MASK, redact_text

# scheme://userinfo@ : the userinfo is a user name and a password, or a token standing alone.
# A "#" or "?" is allowed in it, so an HTML-escaped quote (&#x27;) in a password is still masked.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/\s@<>\"']*)@", re.IGNORECASE)
# Names of settings, variables, POST fields and headers whose whole value is hidden.
HIDDEN_NAMES = re.compile(
    r"API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|COOKIE|CREDENTIAL|PRIVATE|SEED|UNSEAL|ROLE_ID|OTP|CODE", re.IGNORECASE
)


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match["userinfo"].partition(":")
    return f"{match['scheme']}{user}:{MASK}@" if colon else f"{match['scheme']}{MASK}@"


def mask_credentials(text: str) -> str:
    """text with every URL credential, Vault token and `secret=value` pair masked."""
    return redact_text(_URL_USERINFO.sub(_mask_userinfo, text))


class _Shown:
    """A frame variable as the report will print it: its repr, already masked."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class CredentialMaskingFilter(SafeExceptionReporterFilter):
    hidden_settings = HIDDEN_NAMES

    def is_active(self, request: HttpRequest | None) -> bool:
        # Django switches the filter off under DEBUG ("your site is not safe anyway"); a debug page
        # on a laptop still must not show an exchange secret or the Valkey password to whoever looks.
        return True

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        # Django recurses through dicts, lists and tuples by calling this again for each item.
        if isinstance(value, str):  # lazy strings (which say they are str) too
            text = str(value)
            if (masked := mask_credentials(text)) != text:
                value = masked
        return super().cleanse_setting(key, value)

    def get_post_parameters(self, request: HttpRequest | None) -> Any:
        params = super().get_post_parameters(request)
        if not isinstance(params, MultiValueDict):
            return params
        cleansed = params.copy()
        for name in cleansed:
            if HIDDEN_NAMES.search(name):
                cleansed[name] = self.cleansed_substitute
            else:
                values = cleansed.getlist(name)
                cleansed.setlist(name, [mask_credentials(v) if isinstance(v, str) else v for v in values])
        return cleansed

    def get_traceback_frame_variables(self, request: HttpRequest | None, tb_frame: FrameType) -> Any:
        shown: list[tuple[str, Any]] = []
        for name, value in super().get_traceback_frame_variables(request, tb_frame):
            if isinstance(name, str) and HIDDEN_NAMES.search(name):
                shown.append((name, self.cleansed_substitute))
                continue
            try:
                text = pformat(value)
            except Exception as exc:  # a broken __repr__ must not break the report
                text = f"Error in formatting: {exc.__class__.__name__}"
            shown.append((name, _Shown(mask_credentials(text))))
        return shown


class MaskingExceptionReporter(ExceptionReporter):
    """The exception message and query string masked before they are escaped into the page, then a
    last pass over the whole report."""

    def get_traceback_data(self) -> dict[str, Any]:
        data: dict[str, Any] = super().get_traceback_data()
        for key in ("exception_value", "exception_notes", "request_insecure_uri"):
            if isinstance(data.get(key), str):
                data[key] = mask_credentials(data[key])
        if "request_GET_items" in data:
            data["request_GET_items"] = [
                (name, MASK if HIDDEN_NAMES.search(name) else mask_credentials(str(value)))
                for name, value in data["request_GET_items"]
            ]
        return data

    # Masking puts asterisks where text was: what was safe HTML stays safe.
    def get_traceback_html(self) -> SafeString:
        return mark_safe(mask_credentials(str(super().get_traceback_html())))  # noqa: S308  # nosec B308 B703

    def get_traceback_text(self) -> SafeString:
        return mark_safe(mask_credentials(str(super().get_traceback_text())))  # noqa: S308  # nosec B308 B703
