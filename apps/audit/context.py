"""Who is acting, as the audit log records it: the client address and whether the person was OTP-verified.

A request answered by a view knows both. Work finished elsewhere on a person's behalf — a service
called without its request, a thread the request started, the control worker running a kill the
person pressed — must still record the real person's verification and address, never "no OTP".
The middleware keeps the current request in a context variable (copied into threads started with
`contextvars.copy_context()`); what runs in another process gets a `Via` (plain JSON: an address
and a flag, never a secret) and enters it with `acting_via`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse

from apps.core.net import client_ip
from apps.core.otp import is_verified


@dataclass(frozen=True)
class Via:
    ip: str | None
    otp_verified: bool
    user_id: int | None = None  # whose request it was: it vouches only for that person

    def as_dict(self) -> dict[str, Any]:
        return {"ip": self.ip, "otp_verified": self.otp_verified, "user_id": self.user_id}

    @classmethod
    def from_dict(cls, data: Any) -> Via | None:
        if not isinstance(data, dict):
            return None
        ip, verified, user_id = data.get("ip"), data.get("otp_verified"), data.get("user_id")
        return cls(
            ip=ip if isinstance(ip, str) and ip else None,
            otp_verified=verified is True,
            user_id=user_id if isinstance(user_id, int) else None,
        )


_current: contextvars.ContextVar[HttpRequest | Via | None] = contextvars.ContextVar("audit_via", default=None)


def via_of(request: HttpRequest) -> Via:
    user = getattr(request, "user", None)
    user_id = getattr(user, "pk", None)
    return Via(
        ip=client_ip(request),
        otp_verified=bool(user is not None and is_verified(user)),
        user_id=user_id if isinstance(user_id, int) else None,
    )


def current_via() -> Via | None:
    """The acting person's verification and address, as of now (a login during the request counts)."""
    source = _current.get()
    if isinstance(source, HttpRequest):
        return via_of(source)
    return source


@contextmanager
def acting_via(via: Via | HttpRequest | None) -> Iterator[None]:
    token = _current.set(via)
    try:
        yield
    finally:
        _current.reset(token)


class AuditContextMiddleware:
    """Makes the request the audit log's source of "who, from where, verified" for everything it runs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with acting_via(request):
            return self.get_response(request)
