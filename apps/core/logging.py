"""A logging filter that masks secrets before a record reaches any handler.

It masks the values of keys named like secret, password, token, api_key (in dict
arguments, in `extra=` attributes and in `key=value` / `"key": "value"` text), passwords in
URLs, and Vault/OpenBao tokens wherever they appear.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

MASK = "********"
SENSITIVE_KEY = re.compile(
    r"(secret|passw(or)?d|passphrase|token|api[_-]?key|apikey|private[_-]?key|otp|seed|backup[_-]?code|"
    r"authorization|cookie|session[_-]?id|unseal)",
    re.IGNORECASE,
)
# Each starts where a run of name characters starts (the lookbehinds): the leftmost match begins there
# anyway, and without them every position of a long run is tried again, which is quadratic (a
# 20,000-character path in a log line took seconds).
_KEY = (
    r"(?<![A-Za-z0-9_.-])[A-Za-z0-9_.-]*(?:secret|passw(?:or)?d|passphrase|token|api[_-]?key|apikey|private[_-]?key|seed|unseal)"
    r"[A-Za-z0-9_.-]*"
)
# key=value, key: value, "key": "value", 'key': 'value'
_PAIR = re.compile(
    rf"""(?P<key>["']?{_KEY}["']?\s*[=:]\s*)(?P<quote>["']?)(?P<value>[^\s"',;&}})\]]+)""",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(
    r"(?P<head>(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<at>@)", re.IGNORECASE
)
# OpenBao/Vault service and batch tokens ("s.", "hvs.", "b.", "hvb."), and wrapping tokens.
_VAULT_TOKEN = re.compile(r"\b(?:hv[sb]|[sb])\.[A-Za-z0-9_-]{20,}")
# Standard attributes of a LogRecord; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def redact_text(text: str) -> str:
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text)
    text = _PAIR.sub(lambda m: f"{m['key']}{m['quote']}{MASK}", text)
    return _VAULT_TOKEN.sub(MASK, text)


def redact(value: Any) -> Any:
    """Return a copy of value with sensitive keys masked, recursively."""
    if isinstance(value, Mapping):
        return {k: (MASK if isinstance(k, str) and SENSITIVE_KEY.search(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return redact_text(value)
    return value


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for attr in set(vars(record)) - _RECORD_ATTRS:
            if SENSITIVE_KEY.search(attr):
                setattr(record, attr, MASK)
            else:
                setattr(record, attr, redact(getattr(record, attr)))
        # Mask the arguments before formatting: "%(secret)s" must not leak through the message.
        if isinstance(record.args, Mapping):
            record.args = redact(record.args)
        elif isinstance(record.args, tuple):
            record.args = tuple(redact(arg) for arg in record.args)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what we can, masked
            message = f"{record.msg} {record.args}"
        record.msg = redact_text(message) if not isinstance(record.msg, Mapping) else str(redact(record.msg))
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True
