"""Live feed: publish() -> websocket clients, through a real web server, against a raw Redis floor.

Setup (loopback, 2 shared cores): uvicorn serving botconsole.asgi in its own process as `make run`
starts it (one web process: one hub), on the test database; N websocket clients (the `websockets`
library, connecting as a browser tab does: session cookie, same Origin) in a process of their own,
like browsers; publisher threads in this process calling the sync publish() as bot workers do
(floor, row, commit, announcement). Latency is publish() start to a client reading the event, both
on CLOCK_MONOTONIC (time.monotonic, one clock for every process of the machine). An event a client
has not received DRAIN_S after the last publish is lost.

Floor: in the same run, a raw Redis pub/sub round trip (PUBLISH from a thread, one asyncio
subscriber reading it) at the same rate. Figures are the median of RUNS runs of each point.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import requests
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.test import Client

from apps.events.services import publish
from launcher.embedded import free_port
from launcher.run import web_argv
from tests.harness import Harness
from tests.people import Person
from tests.processes import process_env

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]
Report = Callable[[str, dict[str, str]], None]
ROOT = Path(__file__).resolve().parents[2]

RUNS = 5
DURATION_S = 2.0
DRAIN_S = 3.0
CLIENTS = 50
# Several bot workers. The test database commits with fsync (~2-5 ms a commit here), so one
# publisher tops out at a few hundred events/s; PostgreSQL's group commit lets several share a flush.
PUBLISHERS = 8
# The unthrottled point publishes this many events per transaction, as a tick that places orders and
# records fills does, so that it measures the live path rather than the disk's flush rate.
EVENTS_PER_TX = 10


def _percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


@pytest.fixture
def web(services: Harness, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """uvicorn as `make run` starts it, on this test database; yields its host:port and pid."""
    port = free_port()
    env = process_env(services, token=services.tokens["web"].token, var_dir=tmp_path / "var")
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            web_argv(port), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield f"127.0.0.1:{port}", proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def _publishers(run: str, rate: float | None, stop_at: float, sent: list[int]) -> list[threading.Thread]:
    """Threads publishing heartbeats at `rate` events/s in all, one per transaction (None: as fast as
    they can, EVENTS_PER_TX per transaction)."""

    def work(index: int) -> None:
        interval = None if rate is None else PUBLISHERS / rate
        next_at = time.monotonic() + (0 if interval is None else index * interval / PUBLISHERS)
        count = 0
        try:
            while (now := time.monotonic()) < stop_at:
                if interval is not None:
                    if now < next_at:
                        time.sleep(next_at - now)
                    next_at += interval
                if interval is None:
                    with transaction.atomic():
                        for _ in range(EVENTS_PER_TX):
                            publish(kind="heartbeat", data={"t": time.monotonic(), "run": run})
                    count += EVENTS_PER_TX
                else:
                    publish(kind="heartbeat", data={"t": time.monotonic(), "run": run})
                    count += 1
        finally:
            sent[index] = count
            connection.close()  # this thread's own database connection

    return [threading.Thread(target=work, args=(i,), daemon=True) for i in range(PUBLISHERS)]


# The browsers: N sockets in one process, reading frames and keeping, per run, each socket's count,
# whether its sequence numbers only went up, and every event's latency. Commands on stdin:
# "dump <run> <expected>" answers one JSON line once each socket has <expected> events of that run
# (or DRAIN_S passed).
CLIENT_SCRIPT = r"""
import asyncio, json, sys, time
from websockets.asyncio.client import connect

host, cookie, count, drain = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
runs = {}

def run_of(name):
    return runs.setdefault(name, {"received": [0] * count, "in_order": [True] * count, "last": [0] * count,
                                  "latencies": [], "frames": 0})

async def read(i, ws):
    async for text in ws:
        now = time.monotonic()
        events = json.loads(text)["events"]
        seen = set()
        for event in events:
            r = run_of(event["data"]["run"])
            if id(r) not in seen:
                r["frames"] += 1
                seen.add(id(r))
            r["latencies"].append(now - event["data"]["t"])
            r["in_order"][i] = r["in_order"][i] and event["seq"] > r["last"][i]
            r["last"][i] = event["seq"]
            r["received"][i] += 1

async def main():
    sockets = await asyncio.gather(*(
        connect(f"ws://{host}/ws/live/", origin=f"http://{host}", additional_headers={"Cookie": cookie},
                compression=None, max_size=None, proxy=None)
        for _ in range(count)))
    tasks = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(sockets)]
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        _, name, expected = line.split()
        deadline = time.monotonic() + drain
        r = run_of(name)
        while min(r["received"]) < int(expected) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        lat = sorted(r["latencies"])
        pick = lambda q: lat[min(len(lat) - 1, round(q * (len(lat) - 1)))] * 1000 if lat else float("nan")
        print(json.dumps({"received": sum(r["received"]), "in_order": all(r["in_order"]), "frames": r["frames"],
                          "p50": pick(0.5), "p99": pick(0.99)}), flush=True)
        runs.pop(name)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets))

asyncio.run(main())
"""


class Browsers:
    def __init__(self, host: str, cookie: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT_SCRIPT, host, cookie, str(CLIENTS), str(DRAIN_S)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def dump(self, run: str, expected: int) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"dump {run} {expected}\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=20)


def _cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _point(browsers: Browsers, rate: float | None, web_pid: int) -> dict[str, float]:
    run = secrets.token_hex(4)
    cpu_before = _cpu_s(web_pid)
    sent = [0] * PUBLISHERS
    stop_at = time.monotonic() + DURATION_S
    threads = _publishers(run, rate, stop_at, sent)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = sum(sent)
    got = browsers.dump(run, total)
    cpu = _cpu_s(web_pid) - cpu_before
    assert got["in_order"], "a client received events out of order"
    return {
        "rate": total / DURATION_S,
        "p50": got["p50"],
        "p99": got["p99"],
        "lost": total * CLIENTS - got["received"],
        "events_per_frame": got["received"] / got["frames"] if got["frames"] else 0.0,
        # The web process's CPU per event (read once, filtered and sent to every socket): what
        # bounds its rate on a free core, whatever else the machine runs.
        "web_cpu_us": cpu / total * 1e6 if total else float("nan"),
    }


async def _redis_floor(rate: float) -> dict[str, float]:
    """Raw Redis pub/sub at `rate`: PUBLISH (sync, from a thread) -> one asyncio subscriber."""
    channel = f"bench-floor-{os.getpid()}"
    sub_client = aioredis.Redis.from_url(django_settings.REDIS_URL)
    pubsub = sub_client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    latencies: list[float] = []
    stop_at = time.perf_counter() + DURATION_S
    sent = [0]

    def work() -> None:
        client = redis.Redis.from_url(django_settings.REDIS_URL)
        next_at = time.perf_counter()
        while (now := time.perf_counter()) < stop_at:
            if now < next_at:
                time.sleep(next_at - now)
            next_at += 1 / rate
            client.publish(channel, repr(time.perf_counter()))
            sent[0] += 1
        client.close()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while len(latencies) < sent[0] or thread.is_alive():
            message = await pubsub.get_message(timeout=0.5)
            if message is not None:
                latencies.append(time.perf_counter() - float(message["data"]))
            elif time.perf_counter() > stop_at + DRAIN_S:
                break
    finally:
        await asyncio.to_thread(thread.join)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await sub_client.aclose()
    return {
        "p50": statistics.median(latencies) * 1000,
        "p99": _percentile(latencies, 99) * 1000,
        "lost": sent[0] - len(latencies),
    }


def _median(points: list[dict[str, float]], key: str) -> float:
    return statistics.median(p[key] for p in points)


def test_bench_live_feed_latency(
    logged_in: Callable[[str], tuple[Client, Person]], web: tuple[str, int], bench_report: Report
) -> None:
    host, web_pid = web
    client, _ = logged_in("viewer")
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}"

    started = time.monotonic()
    results: dict[str, list[dict[str, float]]] = {"floor": [], "500": [], "2000": [], "max": []}
    for _ in range(RUNS):
        results["floor"].append(asyncio.run(_redis_floor(500)))
    browsers = Browsers(host, cookie)
    try:
        for name, rate in (("500", 500.0), ("2000", 2000.0), ("max", None)):
            for _ in range(RUNS):
                results[name].append(_point(browsers, rate, web_pid))
    finally:
        browsers.close()
    floor_p50, floor_p99 = _median(results["floor"], "p50"), _median(results["floor"], "p99")
    figures = {
        "redis pub/sub floor, 500/s": f"p50 {floor_p50:7.2f} ms   p99 {floor_p99:7.2f} ms",
    }
    for name, label in (("500", "500/s"), ("2000", "2000/s"), ("max", f"unthrottled, {EVENTS_PER_TX}/tx")):
        points = results[name]
        p50, p99 = _median(points, "p50"), _median(points, "p99")
        cpu_us = _median(points, "web_cpu_us")
        figures[f"{label} x {CLIENTS} sockets"] = (
            f"p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   published {_median(points, 'rate'):6.0f}/s   "
            f"lost {int(max(p['lost'] for p in points))} (worst run)   "
            f"{_median(points, 'events_per_frame'):.1f} events/frame   "
            f"p50 {p50 / floor_p50:5.1f}x floor   p99 {p99 / floor_p99:5.1f}x floor   "
            f"web CPU {cpu_us:5.0f} us/event (~{1e6 / cpu_us:5.0f}/s a core)"
        )
    sustained = [p["rate"] for p in results["max"] if p["lost"] == 0]
    figures["max sustained with 0 lost"] = (
        f"{statistics.median(sustained):6.0f}/s (median of {len(sustained)} lossless of {RUNS} unthrottled runs, "
        f"{PUBLISHERS} publisher threads, {EVENTS_PER_TX} events per transaction)"
        if sustained
        else "none of the unthrottled runs was lossless"
    )
    figures["wall time"] = f"{time.monotonic() - started:.0f} s"
    # The machine is shared: the figures mean little without the load they ran under.
    one, five, _ = os.getloadavg()
    figures["load average (1, 5 min)"] = f"{one:.1f}, {five:.1f} on {os.cpu_count()} cores"
    bench_report(f"live feed: publish() -> {CLIENTS} websocket clients via uvicorn (median of {RUNS} runs)", figures)
    # Correctness fails the bench; the speed targets (botconsole issue 16) are printed as met or
    # missed, since on a shared machine they depend on what else runs.
    targets = {
        "target p99 <= 50 ms at 500/s x 50": _median(results["500"], "p99") <= 50,
        "target >= 2,000/s sustained, 0 lost": bool(sustained) and statistics.median(sustained) >= 2000,
    }
    bench_report("live feed targets", {k: "met" if ok else "MISSED" for k, ok in targets.items()})
    assert all(p["lost"] == 0 for points in results.values() for p in points if "rate" in p), "events lost"
