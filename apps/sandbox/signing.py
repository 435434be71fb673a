"""Binance's request authentication: X-MBX-APIKEY, HMAC-SHA256 signature, timestamp and recvWindow.

REST: the signature covers the raw query string followed by the raw body, exactly as sent
(Binance's "totalParams"), minus the `signature` parameter itself. WebSocket API: it covers the
params sorted by name and joined as `key=value&...`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from apps.sandbox import errors
from apps.sandbox.state import Account, ExchangeState, valid_key_format

DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000
# Binance accepts a timestamp up to one second ahead of its clock.
MAX_AHEAD_MS = 1000


def hmac_hex(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def split_signature(raw: str) -> tuple[str, str | None]:
    """The raw parameter string without `signature=...`, and the signature."""
    kept: list[str] = []
    signature: str | None = None
    for part in raw.split("&") if raw else []:
        if part.startswith("signature="):
            signature = unquote_plus(part[len("signature=") :])
        else:
            kept.append(part)
    return "&".join(kept), signature


def parse_params(raw_query: str, raw_body: str) -> dict[str, str]:
    """Query and body parameters; the query wins when both carry one, as on Binance."""
    params: dict[str, str] = {}
    for raw in (raw_body, raw_query):
        seen: set[str] = set()
        for key, value in parse_qsl(raw, keep_blank_values=True):
            if key in seen:
                raise errors.duplicate_parameter(key)
            seen.add(key)
            params[key] = value
    return params


def account_for_key(state: ExchangeState, api_key: str | None, peer: str | None) -> Account:
    if not api_key or not valid_key_format(api_key):
        raise errors.key_format_invalid()
    account = state.accounts.get(api_key)
    if account is None or not account.permissions.allows_peer(peer):
        raise errors.key_rejected()
    return account


def check_timestamp(params: Mapping[str, Any], now_ms: int) -> None:
    raw_ts = params.get("timestamp")
    if raw_ts is None or str(raw_ts) == "":
        raise errors.mandatory("timestamp")
    try:
        timestamp = int(str(raw_ts))
    except ValueError as exc:
        raise errors.mandatory("timestamp") from exc
    raw_window = params.get("recvWindow")
    recv_window = DEFAULT_RECV_WINDOW
    if raw_window is not None and str(raw_window) != "":
        try:
            recv_window = int(str(raw_window))
        except ValueError as exc:
            raise errors.invalid_value("recvWindow") from exc
        if recv_window > MAX_RECV_WINDOW:
            raise errors.recv_window_too_large()
    if timestamp >= now_ms + MAX_AHEAD_MS:
        raise errors.timestamp_ahead()
    if now_ms - timestamp > recv_window:
        raise errors.timestamp_outside_window()


def verify_rest(
    state: ExchangeState, api_key: str | None, peer: str | None, raw_query: str, raw_body: str, now_ms: int
) -> tuple[Account, dict[str, str]]:
    """Authenticate a SIGNED REST request; returns the account and the request's parameters."""
    account = account_for_key(state, api_key, peer)
    query, query_signature = split_signature(raw_query)
    body, body_signature = split_signature(raw_body)
    signature = query_signature or body_signature
    params = parse_params(raw_query, raw_body)
    params.pop("signature", None)
    if not signature:
        raise errors.mandatory("signature")
    if not hmac.compare_digest(hmac_hex(account.secret, query + body), signature.lower()):
        raise errors.bad_signature()
    check_timestamp(params, now_ms)
    return account, params


def ws_payload(params: Mapping[str, Any]) -> str:
    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return "&".join(f"{k}={text(v)}" for k, v in sorted(params.items()) if k != "signature")


def verify_ws(state: ExchangeState, params: Mapping[str, Any], peer: str | None, now_ms: int) -> Account:
    """Authenticate a signed WebSocket API request (`apiKey`, `timestamp`, `signature` in params)."""
    api_key = params.get("apiKey")
    account = account_for_key(state, api_key if isinstance(api_key, str) else None, peer)
    signature = params.get("signature")
    if not isinstance(signature, str) or not signature:
        raise errors.mandatory("signature")
    if not hmac.compare_digest(hmac_hex(account.secret, ws_payload(params)), signature.lower()):
        raise errors.bad_signature()
    check_timestamp(params, now_ms)
    return account
