"""The one place that says which address a request came from (security invariant 9).

django-axes (AXES_CLIENT_IP_CALLABLE), the audit log, the new-address mail and the session list
all ask `client_ip`, so the address that is locked out is the address that is recorded.

It reads REMOTE_ADDR and nothing else. The ASGI server fills that in: under `make run` uvicorn
runs with `--no-proxy-headers`, so it is the socket's peer; in production uvicorn believes
X-Forwarded-For only from the configured proxy (`--forwarded-allow-ips`, deploy/systemd/
botconsole-web.service), which overwrites whatever the client sent (deploy/nginx/botconsole.conf).
No forwarded header is ever parsed here: a second parser would be a second opinion a client could
pick.
"""

from __future__ import annotations

import ipaddress
from typing import Any


def client_ip(request: Any) -> str | None:
    """The request's client address in canonical form, or None when there is no valid one.

    `request` is an HttpRequest, or anything with a META mapping (django-axes passes what it has).
    """
    meta = getattr(request, "META", None) or {}
    raw = str(meta.get("REMOTE_ADDR") or "").strip()
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return None
    # The same peer over an IPv4-mapped IPv6 socket is still that IPv4 address: one lockout counter.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.compressed
    return address.compressed
