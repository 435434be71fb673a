"""Websocket auth: security invariant 3 for sockets. Only a same-origin, OTP-verified session gets a socket."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from apps.accounts.models import User
from apps.live.selectors import socket_user

REFUSED = 4003
DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]  # scheme, host (lower case, no brackets), port


def _origin(scheme: str, netloc: str) -> Origin | None:
    """(scheme, host, port) of an http(s) origin, the port filled in; None for anything else."""
    if scheme not in DEFAULT_PORTS or not netloc or "@" in netloc:
        return None
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:  # a port that is not a number, or out of range
        return None
    if not parts.hostname or parts.path or parts.query or parts.fragment:
        return None
    return scheme, parts.hostname.lower(), port


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    """The one value of a header; None when it is absent, sent twice, or not latin-1 text."""
    values = [value for key, value in scope.get("headers", []) if key.lower() == name]
    if len(values) != 1:
        return None
    try:
        return bytes(values[0]).decode("latin-1").strip()
    except (UnicodeDecodeError, TypeError):
        return None


def _trusted(origin: Origin) -> bool:
    """Is origin one of CSRF_TRUSTED_ORIGINS (where "https://*.example.com" covers subdomains, as for CSRF)?"""
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        scheme, _, netloc = entry.partition("://")
        wildcard = netloc.startswith("*.")
        trusted = _origin(scheme.lower(), netloc[2:] if wildcard else netloc)
        if trusted is None or (trusted[0], trusted[2]) != (origin[0], origin[2]):
            continue
        if origin[1] == trusted[1] or (wildcard and is_same_domain(origin[1], "." + trusted[1])):
            return True
    return False


def origin_allowed(scope: dict[str, Any]) -> bool:
    """A socket's Origin must be the console's own origin (scheme, host and port of the URL the
    browser opened, from the Host header and the socket's scheme) or one of CSRF_TRUSTED_ORIGINS;
    the Host must be an allowed host. No Origin, "null", or anything unparsable is refused."""
    host = _header(scope, b"host")
    raw_origin = _header(scope, b"origin")
    if not host or not raw_origin:
        return False
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    scheme, sep, netloc = raw_origin.partition("://")
    origin = _origin(scheme.lower(), netloc) if sep else None
    if origin is None:
        return False
    # uvicorn gives "wss" behind a TLS proxy that says so (X-Forwarded-Proto), else "ws".
    own = _origin("https" if scope.get("scheme") == "wss" else "http", host)
    return origin == own or _trusted(origin)


class SameOriginMiddleware(BaseMiddleware):  # type: ignore[misc]
    """Refuse (before accept, as an HTTP 403) a socket opened from any other origin than the console's.

    channels' AllowedHostsOriginValidator compares host names only: a page at http://127.0.0.1:1
    (another local program) passed for a console at http://127.0.0.1:8000.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await super().__call__(scope, receive, send)


class OTPVerifiedMiddleware(BaseMiddleware):  # type: ignore[misc]
    """Close (before accept, code 4003) a socket whose session is not OTP-verified for an active viewer.

    Sits inside AuthMiddlewareStack, which has resolved scope["user"] and scope["session"]. The user
    is replaced with a fresh copy whose permission cache is warm, for the consumer's per-event checks.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await super().__call__(scope, receive, send)
        user, session = scope.get("user"), scope.get("session")
        user_id = user.pk if user is not None and user.is_authenticated else None
        session_key = session.session_key if session is not None else None
        verified: User | None = await database_sync_to_async(socket_user)(session_key=session_key, user_id=user_id)
        if verified is None:
            # Wait for the handshake, then refuse it: the client never gets an open socket.
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": REFUSED})
            return None
        return await super().__call__(dict(scope, user=verified), receive, send)
