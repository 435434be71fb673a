"""The live hub: one Redis subscription and one database read per process, filtered per socket in memory.

The real ASGI application with several WebsocketCommunicators in one event loop (one "web
process"), real Valkey and PostgreSQL. transaction=True: publish() announces only after a real commit.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings as django_settings
from django.db import transaction
from django.test import Client

from apps.accounts.models import User
from apps.bots.models import Bot
from apps.events import hub as hub_module
from apps.events.hub import MAX_PENDING, Subscriber
from apps.events.models import Event
from apps.events.services import publish
from apps.live.selectors import audience, can_see
from tests.events.test_settled import open_publisher
from tests.live.conftest import frame, run, socket

pytestmark = pytest.mark.django_db(transaction=True)

Login = Callable[[str], tuple[Client, Any]]
apublish = sync_to_async(publish)


def _valkey() -> redis.Redis:
    return redis.Redis.from_url(django_settings.REDIS_URL)


async def _events(ws: Any, count: int, timeout: float = 5) -> tuple[list[dict[str, Any]], int]:
    """Frames until `count` events arrived: (the events, how many frames carried them)."""
    got: list[dict[str, Any]] = []
    frames = 0
    deadline = time.monotonic() + timeout
    while len(got) < count:
        got += await frame(ws, timeout=max(0.1, deadline - time.monotonic()))
        frames += 1
    return got, frames


def test_many_sockets_share_one_subscription_and_each_event_is_read_once(
    logged_in: Login, make_bot: Callable[[str], Bot], own_notify_channel: str
) -> None:
    client, _ = logged_in("viewer")
    bot = make_bot("shared")

    async def scenario() -> None:
        sockets = [socket(client) for _ in range(8)] + [socket(client, f"/ws/live/?bot={bot.pk}") for _ in range(4)]
        for ws in sockets:
            assert (await ws.connect(timeout=5))[0]
        process_hub = hub_module.hub()
        assert len(process_hub.subscribers) == 12
        for _ in range(100):  # the subscription is made just after the hub starts reading
            if process_hub.stats.subscriptions:
                break
            await asyncio.sleep(0.05)
        numsub = await asyncio.to_thread(lambda: _valkey().pubsub_numsub(own_notify_channel))
        assert numsub == [(own_notify_channel.encode(), 1)]
        rows_before = process_hub.stats.rows
        seqs = [(await apublish(kind="heartbeat", bot_id=bot.pk, data={"n": n})).seq for n in range(5)]
        for ws in sockets:
            got, _ = await _events(ws, 5)
            assert [e["seq"] for e in got] == seqs  # in order, none twice
        # Twelve sockets, five events: five rows read from the database, not sixty.
        assert process_hub.stats.rows - rows_before == 5
        assert process_hub.stats.subscriptions == 1
        for ws in sockets:
            await ws.disconnect()
        assert not process_hub.subscribers

    run(scenario)


def test_a_burst_arrives_in_one_frame_per_socket_filtered_for_each(
    logged_in: Login, make_bot: Callable[[str], Bot]
) -> None:
    admin_client, _ = logged_in("admin")
    viewer_client, _ = logged_in("viewer")
    bot, other = make_bot("burst"), make_bot("burst-other")

    def burst() -> list[Event]:
        # One commit: the hub's read sees all of it or none of it.
        with transaction.atomic():
            events = [publish(kind="order_new", bot_id=bot.pk, data={"n": n}) for n in range(20)]
            events.append(publish(kind="alert", data={"kind": "key_check_failed", "audience": "admin"}))
            events += [publish(kind="fill", bot_id=other.pk, data={"n": n}) for n in range(9)]
            return events

    async def scenario() -> None:
        admin, viewer, followed = (
            socket(admin_client),
            socket(viewer_client),
            socket(viewer_client, f"/ws/live/?bot={bot.pk}"),
        )
        for ws in (admin, viewer, followed):
            assert (await ws.connect(timeout=5))[0]
        events = await sync_to_async(burst)()
        admin_alert = events[20].seq
        everything = [e.seq for e in events]
        assert [e["seq"] for e in await frame(admin)] == everything
        assert [e["seq"] for e in await frame(viewer)] == [s for s in everything if s != admin_alert]
        assert [e["seq"] for e in await frame(followed)] == everything[:20]
        for ws in (admin, viewer, followed):
            assert await ws.receive_nothing(timeout=0.3)
            await ws.disconnect()

    run(scenario)


def test_a_socket_never_gets_a_row_ahead_of_one_still_being_committed(logged_in: Login) -> None:
    client, _ = logged_in("viewer")

    async def scenario() -> None:
        ws = socket(client)
        assert (await ws.connect(timeout=5))[0]
        with open_publisher() as slow:
            fast = (await apublish(kind="fill", data={})).seq
            # Announced and committed, but a lower number is still open: held back.
            assert await ws.receive_nothing(timeout=1.5)
            await asyncio.to_thread(slow.end, commit=True)
            got, _ = await _events(ws, 2)
            assert [e["seq"] for e in got] == [slow.seq, fast]
        await ws.disconnect()

    run(scenario)


def test_a_rolled_back_number_does_not_stop_the_feed(logged_in: Login) -> None:
    """A rollback announces nothing: the hub looks again by itself while a number is held back."""
    client, _ = logged_in("viewer")

    async def scenario() -> None:
        ws = socket(client)
        assert (await ws.connect(timeout=5))[0]
        with open_publisher() as slow:
            fast = (await apublish(kind="fill", data={})).seq
            assert await ws.receive_nothing(timeout=0.5)
            await asyncio.to_thread(slow.end, commit=False)
            assert [e["seq"] for e in await frame(ws, timeout=2)] == [fast]
        await ws.disconnect()

    run(scenario)


def test_with_redis_unreachable_publish_waits_briefly_and_the_event_still_arrives(
    logged_in: Login, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = logged_in("viewer")

    async def scenario() -> None:
        ws = socket(client)
        assert (await ws.connect(timeout=5))[0]
        # Announcements now go nowhere (the hub keeps its subscription on the real Valkey).
        settings.REDIS_URL = "redis://127.0.0.1:9/0"
        started = time.monotonic()
        event = await apublish(kind="order_new", data={"lost": "announcement"})
        took = time.monotonic() - started
        assert took < 1.0, took
        assert "not announced" in caplog.text
        # The hub's own poll finds the row by sequence.
        assert [e["seq"] for e in await frame(ws, timeout=hub_module.POLL_IDLE_S + 2)] == [event.seq]
        await ws.disconnect()

    run(scenario)


def test_the_publisher_keeps_its_connection_across_publishes(own_notify_channel: str) -> None:
    """No connection (nor event loop) per publish: 50 publishes from one thread reuse what is open."""

    def publishers() -> set[str]:
        mine = f"botconsole-live-publisher-{os.getpid()}"
        return {c["id"] for c in _valkey().client_list() if c.get("name") == mine}

    publish(kind="heartbeat", data={})
    first = publishers()
    for n in range(50):
        publish(kind="heartbeat", data={"n": n})
    assert first and publishers() == first


def test_a_socket_that_stops_reading_is_cut_off_not_buffered_forever() -> None:
    async def scenario() -> None:
        subscriber = Subscriber(lambda event: True)
        subscriber.offer([(Event(seq=n, kind="heartbeat"), "{}") for n in range(MAX_PENDING)])
        assert await subscriber.next_frame() is not None  # within the limit: one frame with all
        subscriber.offer([(Event(seq=n, kind="heartbeat"), "{}") for n in range(MAX_PENDING + 1)])
        assert await subscriber.next_frame() is None
        assert subscriber.pending == []

    run(scenario)


def test_a_filter_that_fails_sends_nothing_to_its_socket() -> None:
    def broken(event: Event) -> bool:
        raise ValueError("cannot judge")

    async def scenario() -> None:
        subscriber = Subscriber(broken)
        subscriber.offer([(Event(seq=1, kind="heartbeat"), "{}")])
        assert not subscriber.ready.is_set() and subscriber.pending == []

    run(scenario)


def test_users_with_the_same_audience_see_the_same_events(person: Callable[..., Any]) -> None:
    """The hub filters once per audience (apps/live/selectors.audience): it must say all can_see reads."""
    users = [person(f"aud-{role}", role).user for role in ("viewer", "operator", "admin")]
    nobody = person("aud-none", "viewer").user
    nobody.groups.clear()
    users.append(User.objects.get(pk=nobody.pk))
    events = [
        Event(seq=1, kind="heartbeat", payload={}),
        Event(seq=2, kind="alert", payload={"audience": "admin"}),
        Event(seq=3, kind="alert", payload={"audience": "all"}),
        Event(seq=4, kind="alert", payload="not a dict"),
    ]
    seen = {u.pk: [e.seq for e in events if can_see(u, e)] for u in users}
    for a in users:
        for b in users:
            if audience(a) == audience(b):
                assert seen[a.pk] == seen[b.pk], (a, b)
    # And they do differ where the rule differs, so the comparison above has something to check.
    assert len({tuple(v) for v in seen.values()}) == 3


class _RollBack(Exception):
    pass


def _announcements(pubsub: Any, wait_s: float = 0.5) -> list[int]:
    """Every announcement on the channel until it has been quiet for wait_s."""
    got: list[int] = []
    while (message := pubsub.get_message(ignore_subscribe_messages=True, timeout=wait_s)) is not None:
        got.append(int(message["data"]))
    return got


def test_a_transaction_announces_once_with_its_highest_number_and_a_rolled_back_one_never(
    own_notify_channel: str,
) -> None:
    """Announcements only wake the hubs, which read by sequence: one per transaction is enough, and saves each
    event of a tick a Redis round trip."""
    pubsub: Any = _valkey().pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(own_notify_channel)
    try:
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        with transaction.atomic():
            first = [publish(kind="order_update", data={"n": n}).seq for n in range(10)]
        with transaction.atomic():
            with pytest.raises(_RollBack), transaction.atomic():
                publish(kind="heartbeat", data={"in": "a savepoint that rolls back"})
                raise _RollBack
            kept = publish(kind="heartbeat", data={"after": "the savepoint"}).seq
        with pytest.raises(_RollBack), transaction.atomic():
            publish(kind="heartbeat", data={"in": "a transaction that rolls back"})
            raise _RollBack
        alone = publish(kind="fill", data={"autocommit": True}).seq
        assert _announcements(pubsub) == [max(first), kept, alone]
    finally:
        pubsub.close()


def test_a_stopped_hub_ends_its_tasks_without_being_cancelled(logged_in: Login) -> None:
    """Stopping lets the hub's reader and its Redis listener end by themselves: a cancellation swallowed inside the
    Redis client once left a listener running and the event loop's shutdown (a test's) waiting for ever."""
    client, _ = logged_in("viewer")

    async def scenario() -> None:
        ws = socket(client)
        assert (await ws.connect(timeout=5))[0]
        process_hub = hub_module.hub()
        for _ in range(100):
            if process_hub.stats.subscriptions:
                break
            await asyncio.sleep(0.05)
        listeners = [t for t in asyncio.all_tasks() if t.get_name() == "live-hub-listener"]
        assert process_hub.task is not None and len(listeners) == 1
        await ws.disconnect()
        await process_hub.stop()
        assert process_hub.task.done() and not process_hub.task.cancelled()
        assert listeners[0].done() and not listeners[0].cancelled()
        assert hub_module._hubs.get(asyncio.get_running_loop()) is None

    async_to_sync(scenario)()
