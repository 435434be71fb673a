"""The live feed socket: follows the fleet or one bot, forwards the events its user may see.

Events come from this process's hub (apps/events/hub.py), which reads each one from the database
once for every socket of the process; this socket only filters them, in memory, with the same rule
as the catch-up endpoint (apps/live/selectors.can_see) and its user's permissions as of the last
re-check. Frames are {"events": [...]}, oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from apps.accounts.models import User
from apps.bots.models import Bot
from apps.events.hub import Hub, Subscriber, hub
from apps.events.models import Event
from apps.live.presence import asocket_gone, asocket_seen
from apps.live.selectors import audience, can_see, socket_user

logger = logging.getLogger(__name__)

CLOSE_SERVER_ERROR = 1011
CLOSE_SESSION_ENDED = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_NOT_FOUND = 4004
# This socket stopped reading while events piled up; the page reconnects and catches up.
CLOSE_FELL_BEHIND = 4008


class LiveConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    # No channel layer: the process's hub is this socket's only source (and an unconfigured
    # alias gives none), so a socket adds no Redis traffic of its own.
    channel_layer_alias = None

    user: User
    session_key: str | None
    bot_id: int | None = None
    viewer: tuple[bool, bool] = (False, False)
    socket_id: str = ""
    closing: bool = False
    counted: bool = False
    subscriber: Subscriber | None = None
    hub: Hub | None = None
    tasks: tuple[asyncio.Task[None], ...] = ()

    async def connect(self) -> None:
        # OTPVerifiedMiddleware has already refused anyone else; this is a second lock.
        user = self.scope.get("user")
        if not isinstance(user, User):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.user, self.viewer = user, audience(user)
        self.session_key = self.scope["session"].session_key
        bot_ids = parse_qs(self.scope.get("query_string", b"").decode()).get("bot")
        if bot_ids:
            bot_id = bot_ids[0]
            if not bot_id.isdigit() or not await _bot_exists(int(bot_id)):
                await self.close(code=CLOSE_NOT_FOUND)
                return
            self.bot_id = int(bot_id)
        subscriber = Subscriber(self.accepts, self.group_key)
        process_hub = hub()
        try:
            # Before accept: once the page knows it is connected (and catches up), nothing after
            # the hub's cursor can pass this socket by.
            await process_hub.subscribe(subscriber)
        except Exception:
            logger.exception("live socket refused: the live hub is not running")
            await self.close(code=CLOSE_SERVER_ERROR)
            return
        self.subscriber, self.hub = subscriber, process_hub
        # A random id for the presence count: nothing about the user.
        self.socket_id = f"live.{secrets.token_hex(12)}"
        # Counted before the client learns it is accepted, so a scrape after that sees it.
        self.counted = True
        await asocket_seen(self.socket_id)
        await self.accept()
        self.tasks = (
            asyncio.create_task(self._forward_forever()),
            asyncio.create_task(self._recheck_forever()),
        )

    async def disconnect(self, code: int) -> None:
        self.closing = True
        if self.hub is not None and self.subscriber is not None:
            self.hub.unsubscribe(self.subscriber)
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.counted:
            await asocket_gone(self.socket_id)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The feed is one-way; anything a client sends is ignored."""

    def accepts(self, event: Event) -> bool:
        """The hub asks this for every event; on the event loop, so from memory only."""
        if self.closing:
            return False
        if self.bot_id is not None and event.bot_id != self.bot_id:
            return False
        # Each socket checks its own user: the hub is shared, the permissions are not.
        return can_see(self.user, event)

    def group_key(self) -> tuple[object, ...] | None:
        """Sockets with the same answer accept the same events (see apps/live/selectors.audience)."""
        return None if self.closing else (self.bot_id, self.viewer)

    async def _forward_forever(self) -> None:
        assert self.subscriber is not None
        while True:
            frame = await self.subscriber.next_frame()
            if self.closing:
                return
            if frame is None:
                self.closing = True
                await self.close(code=CLOSE_FELL_BEHIND)
                return
            await self.send(text_data=frame)

    async def _recheck_forever(self) -> None:
        while True:
            await asyncio.sleep(settings.LIVE_RECHECK_S)
            check = database_sync_to_async(socket_user)
            user: User | None = await check(session_key=self.session_key, user_id=self.user.pk)
            if user is None:
                # Stop forwarding at once, even before the disconnect comes back from the server.
                self.closing = True
                await self.close(code=CLOSE_SESSION_ENDED)
                return
            self.user, self.viewer = user, audience(user)  # fresh permissions for can_see
            await asocket_seen(self.socket_id)


async def _bot_exists(bot_id: int) -> bool:
    exists: bool = await database_sync_to_async(Bot.objects.filter(pk=bot_id).exists)()
    return exists
