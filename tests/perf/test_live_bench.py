"""Live feed latency: from publish() to N websocket clients receiving the event.

Setup (loopback, in-process): the real ASGI application (botconsole.asgi) with N
WebsocketCommunicators in one event loop, the real Valkey channel layer and PostgreSQL; publisher
threads call the sync publish() as a bot worker does (a row, commit, group_send from a fresh event
loop). Latency is publish() start to the client reading the event. Each point runs for
DURATION_S and then drains for at most DRAIN_S; events not delivered by then are counted as lost
(channels_redis drops messages to a channel holding `capacity`, default 100, unread ones).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test import Client

from apps.events.services import publish
from tests.live.conftest import socket
from tests.people import Person

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]
Report = Callable[[str, dict[str, str]], None]
DURATION_S = 2.0
DRAIN_S = 3.0
PUBLISHERS = 4  # like several bot workers; one sync publisher alone tops out below the highest rate


def _percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def _publishers(rate: float | None, stop_at: float, sent: list[int]) -> list[threading.Thread]:
    """Threads publishing heartbeats at `rate` events/s in all (None: as fast as they can)."""

    def work(index: int) -> None:
        interval = None if rate is None else PUBLISHERS / rate
        next_at = time.perf_counter() + (0 if interval is None else index * interval / PUBLISHERS)
        count = 0
        try:
            while (now := time.perf_counter()) < stop_at:
                if interval is not None:
                    if now < next_at:
                        time.sleep(next_at - now)
                    next_at += interval
                publish(kind="heartbeat", data={"t": time.perf_counter()})
                count += 1
        finally:
            sent[index] = count
            connection.close()  # this thread's own database connection

    return [threading.Thread(target=work, args=(i,), daemon=True) for i in range(PUBLISHERS)]


def _run_point(client: Client, clients: int, rate: float | None) -> dict[str, float]:
    async def scenario() -> dict[str, float]:
        sockets = [socket(client) for _ in range(clients)]
        for ws in sockets:
            assert (await ws.connect(timeout=5))[0]
        latencies: list[float] = []
        received = [0] * clients
        sent = [0] * PUBLISHERS
        start = time.perf_counter()
        stop_at = start + DURATION_S
        threads = _publishers(rate, stop_at, sent)
        for thread in threads:
            thread.start()

        async def read(i: int) -> None:
            deadline = stop_at + DRAIN_S
            while (left := deadline - time.perf_counter()) > 0:
                try:
                    # The queue itself: the communicator's own receive cancels the app on a timeout.
                    output = await asyncio.wait_for(sockets[i].output_queue.get(), timeout=min(left, 0.5))
                except TimeoutError:
                    if not any(t.is_alive() for t in threads) and received[i] >= sum(sent):
                        return
                    continue
                latencies.append(time.perf_counter() - json.loads(output["text"])["data"]["t"])
                received[i] += 1

        await asyncio.gather(*(read(i) for i in range(clients)))
        for thread in threads:
            await asyncio.to_thread(thread.join)
        # Together: each communicator waits up to 1 s for its consumer to wind down.
        await asyncio.gather(*(ws.disconnect() for ws in sockets))
        total = sum(sent)
        return {
            "published": total / DURATION_S,
            "p50": statistics.median(latencies) * 1000 if latencies else float("nan"),
            "p99": _percentile(latencies, 99) * 1000 if latencies else float("nan"),
            "lost": 1 - sum(received) / (total * clients) if total else 0.0,
        }

    return async_to_sync(scenario)()


def test_bench_live_feed_latency(
    logged_in: Callable[[str], tuple[Client, Person]], settings: Any, bench_report: Report
) -> None:
    layer = dict(settings.CHANNEL_LAYERS["default"])
    layer["CONFIG"] = {**layer["CONFIG"], "prefix": f"bench-live-{secrets.token_hex(4)}"}
    settings.CHANNEL_LAYERS = {"default": layer}
    client, _ = logged_in("viewer")

    figures: dict[str, str] = {}
    for clients in (10, 50):
        for rate in (100, 500, 2000):
            point = _run_point(client, clients, rate)
            figures[f"{rate:>5}/s x {clients} clients"] = (
                f"p50 {point['p50']:8.1f} ms   p99 {point['p99']:8.1f} ms   "
                f"published {point['published']:6.0f}/s   lost {point['lost']:.1%}"
            )
        best = _run_point(client, clients, None)
        figures[f"  max/s x {clients} clients"] = (
            f"published {best['published']:6.0f}/s ({PUBLISHERS} threads, unthrottled)   "
            f"p50 {best['p50']:8.1f} ms   p99 {best['p99']:8.1f} ms   lost {best['lost']:.1%}"
        )
    bench_report(f"live feed: publish() -> websocket clients (in-process ASGI, {DURATION_S:.0f} s per point)", figures)
