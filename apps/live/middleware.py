"""Websocket auth: security invariant 3 for sockets. Only an OTP-verified session gets a socket."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware

from apps.accounts.models import User
from apps.live.selectors import socket_user

REFUSED = 4003


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
