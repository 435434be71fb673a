"""The one module that posts alerts to the outside world by webhook.

A delivery is a JSON POST signed with HMAC-SHA256 over "<timestamp>.<body>", so a receiver can
check both who sent it and that it is fresh (see README, "Alert webhook"). Errors come back as
`WebhookFailed` with a short message that never contains the secret or the body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import URLValidator

TIMESTAMP_HEADER = "X-Botconsole-Timestamp"
SIGNATURE_HEADER = "X-Botconsole-Signature"
USER_AGENT = "botconsole-webhook/1"
SCHEMES = ("http", "https")


class WebhookFailed(Exception):
    """The receiver did not take the delivery (no answer, timeout, or a non-2xx status)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def url_is_valid(url: str) -> bool:
    """An absolute http(s) URL with a host, and nothing else (no ftp:, file:, javascript: ...)."""
    try:
        URLValidator(schemes=list(SCHEMES))(url)
    except ValidationError:
        return False
    return urlsplit(url).scheme in SCHEMES


def url_host(url: str) -> str:
    """What logs name instead of the URL (a URL may carry a token in its path or query)."""
    return urlsplit(url).hostname or "?"


def body_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"), sort_keys=True).encode()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def post(*, url: str, secret: str, body: bytes, timeout_s: float) -> int:
    """Post one signed delivery; returns the receiver's status code, raises WebhookFailed unless 2xx."""
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }
    try:
        # No redirects: a receiver that moved must be re-configured, not followed anywhere.
        response = requests.post(url, data=body, headers=headers, timeout=timeout_s, allow_redirects=False)
    except requests.Timeout:
        raise WebhookFailed(f"no answer within {timeout_s:g} s") from None
    except requests.RequestException as exc:
        raise WebhookFailed(f"could not connect ({type(exc).__name__})") from None
    with response:
        if not 200 <= response.status_code < 300:
            raise WebhookFailed(f"the receiver answered HTTP {response.status_code}")
        return int(response.status_code)
