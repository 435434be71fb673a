"""The live hub: one per web process (per event loop), between the event store and the sockets.

One Redis subscription wakes it when events are announced; it then reads every settled event
after its cursor from the database in one query (so each event is read once per process, however
many sockets are open), serializes each once, and hands each socket the events that socket's own
filter accepts. A socket sends what piled up since its last frame as one frame, so a burst becomes
a few frames, not one per event.

Announcements are only wake-ups: a lost one is repaired by the next one or by the poll every
POLL_IDLE_S. The cursor never passes a number an open transaction may still commit
(apps/events/selectors.events_after), so ordering and completeness do not depend on Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from django.conf import settings
from django.db import DatabaseError, connection

from apps.events.models import Event
from apps.events.selectors import events_after, settled_seq
from apps.events.services import event_json, notify_channel

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Reads are at least this far apart: an event after a quiet spell is read at once, and under load
# what arrives within the window shares one read and one frame per socket. Sending a frame costs the
# web process ~50 us per socket, so at 500 events/s x 50 sockets 5 ms cost it ~750 us of CPU per
# event and 15 ms ~470 us (tests/perf/test_live_bench.py), for at most 15 ms more latency.
BATCH_WINDOW_S = 0.015
# With no announcement, read anyway this often (an announcement may have been lost).
POLL_IDLE_S = 1.0
# While an open transaction holds numbers below rows already committed, look again soon: it may
# roll back, and a rollback announces nothing. Doubles up to POLL_IDLE_S.
POLL_HELD_S = 0.01
BATCH_ROWS = 1000
# A socket with this many events not yet sent has stopped reading: it is closed and its page
# reconnects and catches up, rather than the process holding an ever longer backlog.
MAX_PENDING = 20_000
# A hub with no sockets for this long stops (its subscription and database connection go).
IDLE_STOP_S = 30.0
RECONNECT_MAX_S = 10.0
# The longest the hub waits for each clean-up step when it stops.
CLOSE_WAIT_S = 2.0


class Subscriber:
    """One socket's place in the hub: which events it wants, and those not yet sent to it.

    `accepts` runs on the event loop for every event, so it must not touch the database. `audience`,
    if given, names what `accepts` depends on: subscribers answering the same (not None) audience
    accept exactly the same events, so the hub asks only one of them per read (fifty tabs of one
    role cost one filtering, not fifty).
    """

    def __init__(self, accepts: Callable[[Event], bool], audience: Callable[[], Hashable | None] | None = None) -> None:
        self.accepts = accepts
        self.audience = audience
        self.pending: list[str] = []
        self.overflowed = False
        self.ready = asyncio.Event()

    def pick(self, items: list[tuple[Event, str]]) -> list[str]:
        picked: list[str] = []
        for event, text in items:
            try:
                wanted = self.accepts(event)
            except Exception:
                # Fail closed: an event this socket's filter cannot judge is not sent to it.
                logger.exception("live socket filter failed on event %s; not sent", event.seq)
                wanted = False
            if wanted:
                picked.append(text)
        return picked

    def offer(self, items: list[tuple[Event, str]]) -> None:
        self.push(self.pick(items))

    def push(self, picked: list[str]) -> None:
        if not picked:
            return
        self.pending.extend(picked)
        if len(self.pending) > MAX_PENDING:
            self.overflowed = True
            self.pending.clear()
        self.ready.set()

    async def next_frame(self) -> str | None:
        """The next frame to send ({"events": [...]}, oldest first), or None once this socket fell behind."""
        while True:
            await self.ready.wait()
            self.ready.clear()
            if self.overflowed:
                return None
            if self.pending:
                texts, self.pending = self.pending, []
                return '{"events":[' + ",".join(texts) + "]}"


@dataclass
class HubStats:
    """What the hub did, for tests and for a look from the shell."""

    subscriptions: int = 0  # Redis subscriptions made (1 unless Redis went away)
    reads: int = 0  # database reads that returned events
    rows: int = 0  # events read from the database


class Hub:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.subscribers: set[Subscriber] = set()
        self.news = asyncio.Event()
        self.started = asyncio.Event()
        self.cursor = 0
        self.stats = HubStats()
        # The hub's database work runs on one thread of its own, so it keeps one connection.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-hub")
        self.task: asyncio.Task[None] | None = None
        # Set when the hub stops: its listener ends within a second even where redis-py swallowed the cancellation
        # (a listener left reading held the event loop's shutdown, and a test, for ever).
        self.stopping = False

    async def subscribe(self, subscriber: Subscriber) -> None:
        """Add a socket; returns once the hub is reading, so the socket misses nothing after this."""
        if self.task is not None and self.task.done():
            raise RuntimeError("this live hub has stopped")
        self.subscribers.add(subscriber)
        if self.task is None:
            self.task = self.loop.create_task(self._run(), name="live-hub")
        started = asyncio.ensure_future(self.started.wait())
        done, _ = await asyncio.wait({started, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if started not in done:
            started.cancel()
            self.subscribers.discard(subscriber)
            failure = None if self.task.cancelled() else self.task.exception()
            raise RuntimeError("the live hub could not start") from failure

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    async def stop(self, timeout: float = 2 * CLOSE_WAIT_S + POLL_IDLE_S) -> None:
        """Stop reading and let the hub's tasks end by themselves (no cancellation to be swallowed), waiting at most
        `timeout`: before its event loop closes (a test's), so that the loop's shutdown has nothing left to wait for."""
        self.stopping = True
        self.news.set()
        if self.task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait({self.task}, timeout=timeout)

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.loop.run_in_executor(self.executor, _on_hub_thread, fn, *args)

    async def _run(self) -> None:
        listener: asyncio.Task[None] | None = None
        try:
            self.cursor = await self._db(settled_seq)
            listener = self.loop.create_task(self._listen(), name="live-hub-listener")
            self.started.set()
            held_wait = POLL_HELD_S
            last_read = 0.0
            idle_since: float | None = None
            held = False
            while not self.stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.news.wait(), timeout=held_wait if held else POLL_IDLE_S)
                if self.news.is_set():
                    held_wait = POLL_HELD_S
                    if (early := last_read + BATCH_WINDOW_S - self.loop.time()) > 0:
                        await asyncio.sleep(early)
                    self.news.clear()
                elif held:
                    held_wait = min(POLL_IDLE_S, held_wait * 2)
                last_read = self.loop.time()
                try:
                    held = await self._read_and_fan_out()
                except DatabaseError:
                    logger.warning("live hub: database read failed; retrying", exc_info=True)
                    held = True
                except Exception:
                    # Keep serving: a hub that died would leave every socket of the process silent.
                    logger.exception("live hub: a read or fan-out failed; retrying")
                    held = True
                if self.subscribers:
                    idle_since = None
                elif idle_since is None:
                    idle_since = self.loop.time()
                elif self.loop.time() - idle_since > IDLE_STOP_S:
                    return
        finally:
            self.stopping = True
            if listener is not None:
                await _bounded(listener)  # it sees `stopping` within a second and ends by itself
                listener.cancel()
                await _bounded(listener)
            await _bounded(self._db(connection.close))
            self.executor.shutdown(wait=False)
            if _hubs.get(self.loop) is self:
                del _hubs[self.loop]

    async def _read_and_fan_out(self) -> bool:
        """Read and hand out everything settled after the cursor; True while numbers are held back."""
        while True:
            items, cursor, held = await self._db(_read, self.cursor)
            self.cursor = cursor
            if items:
                self.stats.reads += 1
                self.stats.rows += len(items)
                self._fan_out(items)
            if len(items) < BATCH_ROWS:
                return held

    def _fan_out(self, items: list[tuple[Event, str]]) -> None:
        decided: dict[Hashable, list[str]] = {}
        for subscriber in list(self.subscribers):
            audience = subscriber.audience() if subscriber.audience is not None else None
            if audience is None:
                subscriber.offer(items)
                continue
            picked = decided.get(audience)
            if picked is None:
                picked = decided[audience] = subscriber.pick(items)
            subscriber.push(picked)

    async def _listen(self) -> None:
        delay = 0.5
        while not self.stopping:
            client = aioredis.Redis.from_url(
                settings.REDIS_URL, socket_connect_timeout=2.0, socket_timeout=10.0, health_check_interval=5
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(notify_channel())
                self.stats.subscriptions += 1
                # Anything announced while we were not subscribed.
                self.news.set()
                delay = 0.5
                while not self.stopping:
                    if await pubsub.get_message(timeout=1.0) is not None:
                        self.news.set()
            except (redis.RedisError, OSError):
                logger.warning("live hub: Redis subscription lost; polling the database until it is back")
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX_S, delay * 2)
            finally:
                await _bounded(pubsub.aclose())  # type: ignore[no-untyped-call]
                await _bounded(client.aclose())


async def _bounded(work: Awaitable[Any], timeout: float = CLOSE_WAIT_S) -> None:
    """Wait for a clean-up step (closing the Redis subscription, the database connection) at most `timeout`, and
    never raise: a step that hangs (a read cut off mid-way by the cancellation) must not hold the event loop's
    shutdown, and the hub's socket, for ever. A step still running then is left to finish on its own."""
    future = asyncio.ensure_future(work)
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait({future}, timeout=timeout)
    if future.done():
        with contextlib.suppress(Exception, asyncio.CancelledError):
            future.result()


def _on_hub_thread(fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except DatabaseError:
        # A broken connection (a database restart) is replaced on the next read.
        connection.close()
        raise


def _read(after: int) -> tuple[list[tuple[Event, str]], int, bool]:
    found, cursor, held = events_after(after=after, limit=BATCH_ROWS)
    return [(event, json.dumps(event_json(event))) for event in found], cursor, held


_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}


async def hub_stop() -> None:
    """Stop this event loop's hub, if it has one (see Hub.stop)."""
    found = _hubs.get(asyncio.get_running_loop())
    if found is not None:
        await found.stop()


def hub() -> Hub:
    """This event loop's hub (a web process runs one loop, hence one hub)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub(loop)
    return found
