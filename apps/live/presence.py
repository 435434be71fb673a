"""Which live sockets are open right now, across every web process (for /metrics).

Each open socket keeps one member in a Redis sorted set: its channel name (a random id, nothing
about its user), scored with the time it expires. The socket refreshes it on every periodic
re-check and removes it on disconnect; a web process that dies leaves members that simply
expire, so a count never includes a socket older than a few re-check periods.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

KEY = "botconsole:live:sockets"
# A socket missing this many re-checks in a row is counted as gone.
MISSED_RECHECKS = 3


def _ttl_s() -> float:
    return MISSED_RECHECKS * float(settings.LIVE_RECHECK_S) + 5.0


@functools.cache
def _redis(url: str) -> redis.Redis:
    # Synchronous and thread-safe: sockets call it from a worker thread, so one pool serves
    # every event loop of the process.
    return redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)


def _client() -> redis.Redis:
    return _redis(settings.REDIS_URL)


def socket_seen(channel_name: str) -> None:
    """Register (or refresh) an open socket; old members of dead processes are dropped on the way."""
    now = time.time()
    pipe = _client().pipeline(transaction=False)
    pipe.zadd(KEY, {channel_name: now + _ttl_s()})
    pipe.zremrangebyscore(KEY, "-inf", now)
    pipe.execute()


def socket_gone(channel_name: str) -> None:
    _client().zrem(KEY, channel_name)


def socket_count() -> int:
    """Open sockets across every web process (members not yet expired)."""
    return int(_client().zcount(KEY, time.time(), "+inf"))


async def asocket_seen(channel_name: str) -> None:
    """socket_seen for a consumer; a Redis failure is logged, never raised: the feed matters more."""
    try:
        await asyncio.to_thread(socket_seen, channel_name)
    except redis.RedisError:
        logger.warning("live socket presence not recorded (Redis unavailable)")


async def asocket_gone(channel_name: str) -> None:
    try:
        await asyncio.to_thread(socket_gone, channel_name)
    except redis.RedisError:
        logger.warning("live socket presence not removed (Redis unavailable); it expires by itself")
