"""The live feed socket: joins the fleet or one bot, forwards events its user may see."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from apps.accounts.models import User
from apps.bots.models import Bot
from apps.events.models import Event
from apps.events.services import FLEET_GROUP, bot_group, event_json
from apps.live.presence import asocket_gone, asocket_seen
from apps.live.selectors import can_see, socket_user

logger = logging.getLogger(__name__)

CLOSE_SESSION_ENDED = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_NOT_FOUND = 4004


class LiveConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    user: User
    session_key: str | None
    closing: bool = False
    counted: bool = False
    recheck_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        # OTPVerifiedMiddleware has already refused anyone else; this is a second lock.
        user = self.scope.get("user")
        if not isinstance(user, User):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.user = user
        self.session_key = self.scope["session"].session_key
        bot_ids = parse_qs(self.scope.get("query_string", b"").decode()).get("bot")
        group = FLEET_GROUP
        if bot_ids:
            bot_id = bot_ids[0]
            if not bot_id.isdigit() or not await _bot_exists(int(bot_id)):
                await self.close(code=CLOSE_NOT_FOUND)
                return
            group = bot_group(int(bot_id))
        # Channels discards self.groups on disconnect.
        self.groups = [group]
        await self.channel_layer.group_add(group, self.channel_name)
        # Counted before the client learns it is accepted, so a scrape after that sees it.
        self.counted = True
        await asocket_seen(self.channel_name)
        await self.accept()
        self.recheck_task = asyncio.create_task(self._recheck_forever())

    async def disconnect(self, code: int) -> None:
        self.closing = True
        if self.recheck_task is not None:
            self.recheck_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.recheck_task
        if self.counted:
            await asocket_gone(self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The feed is one-way; anything a client sends is ignored."""

    async def live_event(self, message: dict[str, Any]) -> None:
        if self.closing:
            return
        loaded = await _cached_event(int(message["seq"]))
        # Each socket checks its own user: the group is shared, the permissions are not.
        if loaded is None or not can_see(self.user, loaded[0]):
            return
        await self.send(text_data=loaded[1])

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
            self.user = user  # fresh permissions for can_see
            await asocket_seen(self.channel_name)


async def _bot_exists(bot_id: int) -> bool:
    exists: bool = await database_sync_to_async(Bot.objects.filter(pk=bot_id).exists)()
    return exists


# Every socket in this process receives the same seq at the same moment: load each event once and
# share it. Rows never change after commit, so a short-lived cache cannot serve stale data.
_CACHE_TTL_S = 10.0
_CACHE_MAX = 4096
_cache: OrderedDict[int, tuple[float, tuple[Event, str]]] = OrderedDict()
_inflight: dict[tuple[int, int], asyncio.Task[tuple[Event, str] | None]] = {}


async def _cached_event(seq: int) -> tuple[Event, str] | None:
    hit = _cache.get(seq)
    if hit is not None and time.monotonic() - hit[0] < _CACHE_TTL_S:
        return hit[1]
    loop = asyncio.get_running_loop()
    key = (id(loop), seq)  # a task belongs to one event loop
    task = _inflight.get(key)
    if task is None:
        # A task of its own, so one socket disconnecting mid-load does not cancel the others' wait.
        task = _inflight[key] = loop.create_task(database_sync_to_async(_load_event)(seq))
        task.add_done_callback(lambda done: _loaded(key, done))
    return await asyncio.shield(task)


def _loaded(key: tuple[int, int], task: asyncio.Task[tuple[Event, str] | None]) -> None:
    del _inflight[key]
    if not task.cancelled() and task.exception() is None and (loaded := task.result()) is not None:
        _cache[key[1]] = (time.monotonic(), loaded)
        while len(_cache) > _CACHE_MAX:
            _cache.popitem(last=False)


def _load_event(seq: int) -> tuple[Event, str] | None:
    event = Event.objects.filter(seq=seq).first()
    return None if event is None else (event, json.dumps(event_json(event)))
