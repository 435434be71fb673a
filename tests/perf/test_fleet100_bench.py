"""A hundred paper bots at one tick a second on this machine: tick lag, memory, events, exchange requests, a page.

The fleet runs forked workers (FLEET_WORKER_MODE=fork: each worker forked from the preloaded template) on
the sandbox exchange. While it runs for BENCH_FLEET_SECONDS (300 by default; BENCH_FLEET_BOTS bots, 100 by
default) the bench samples once a second:

- tick lag: each running bot's heartbeat age beyond its 1 s interval (a tick that starts late or runs long
  shows as a heartbeat older than the interval);
- memory: the PSS of the supervisor, its template and every worker;
- live events: events stored per second (what the live feed has to deliver);
- exchange requests: the sandbox's count of public requests from this address in the last minute (its
  X-MBX-USED-WEIGHT-1M header), which is what Binance limits per address;
- a page: the dashboard rendered in this process (Django's test client, logged in), p95 of its time.

Floors measured in the same run: a bare `python -c "import ccxt"` (memory) and an idle page (the dashboard
before the fleet starts).
"""

from __future__ import annotations

import os
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.test import Client

from apps.bots.fleet import Fleet
from apps.bots.models import Bot
from apps.events.models import Event
from apps.exchanges.models import ExchangeAccount
from apps.vault import client as vault
from tests.bots.conftest import account  # noqa: F401
from tests.bots.test_fleet import make_bot
from tests.fleet_support import fleet_vault, worker_env  # noqa: F401
from tests.keys import Key
from tests.people import full_login, make_person
from tests.perf.test_fleet_bench import floor_pss_mb, pss_mb

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]
Report = Callable[[str, dict[str, str]], None]
BOTS = int(os.environ.get("BENCH_FLEET_BOTS", "100"))
SECONDS = int(os.environ.get("BENCH_FLEET_SECONDS", "300"))


@pytest.fixture
def forked_fleet(
    fleet_vault: vault.ProcessVault,  # noqa: F811
    worker_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> Iterator[Fleet]:
    # market_data: the host's one market-data feed, as `manage.py runfleet` runs it (without it every bot polls
    # the exchange's REST API, and a hundred of them exceed the sandbox's per-address limit as Binance's would).
    supervisor = Fleet(
        process_vault=fleet_vault,
        env=worker_env,
        grace_s=10,
        log_dir=tmp_path,
        worker_mode="fork",
        market_data=True,
    )
    try:
        yield supervisor
    finally:
        supervisor.shutdown()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _used_weight(sandbox_url: str) -> int | None:
    """The requests this address made in the last minute, as the sandbox counts them; None if it did not answer
    within 5 s (the machine overloaded: reported as such)."""
    try:
        with urllib.request.urlopen(f"{sandbox_url}/api/v3/time", timeout=5) as response:
            return int(response.headers.get("X-MBX-USED-WEIGHT-1M", "0"))
    except urllib.error.HTTPError as refused:  # 429: the address is over its limit, which is a figure too
        return int(refused.headers.get("X-MBX-USED-WEIGHT-1M", "0") or 0)
    except (TimeoutError, urllib.error.URLError):
        return None


def _page_ms(client: Client) -> float:
    started = time.perf_counter()
    response = client.get("/")
    assert response.status_code == 200
    return (time.perf_counter() - started) * 1000


def test_a_hundred_paper_bots_tick_each_second(
    forked_fleet: Fleet,
    account: Callable[[str], tuple[ExchangeAccount, Key]],  # noqa: F811
    sandbox_url: str,
    bench_report: Report,
) -> None:
    acct, _ = account("Bench hundred")
    viewer = make_person("bench-viewer", "viewer")
    client = Client()
    full_login(client, viewer)
    idle_page = statistics.median(_page_ms(client) for _ in range(10))
    ccxt_floor = floor_pss_mb("import ccxt")

    bots = [make_bot(acct, f"hundred-{i}", mode="paper") for i in range(BOTS)]
    started = time.monotonic()
    while Bot.objects.filter(pk__in=[b.pk for b in bots], observed_state="running").count() < BOTS:
        assert time.monotonic() - started < 900, "the fleet did not start every worker in 15 minutes"
        forked_fleet.sync_once()
        time.sleep(0.5)
    ramp_s = time.monotonic() - started

    lags: list[float] = []
    pss: list[float] = []
    weights: list[int | None] = []
    pages: list[float] = []
    loads: list[float] = []
    events_start, t0 = Event.objects.count(), time.monotonic()
    while time.monotonic() - t0 < SECONDS:
        tick_started = time.monotonic()
        forked_fleet.sync_once()
        now = time.time()
        for beat in Bot.objects.filter(pk__in=[b.pk for b in bots]).values_list("last_heartbeat", flat=True):
            if beat is not None:
                lags.append(max(0.0, now - beat.timestamp() - 1.0))
        if int(tick_started - t0) % 10 == 0:
            pss.append(_fleet_pss(forked_fleet))
            weights.append(_used_weight(sandbox_url))
            loads.append(os.getloadavg()[0])
        pages.append(_page_ms(client))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick_started)))
    elapsed = time.monotonic() - t0
    events_per_s = (Event.objects.count() - events_start) / elapsed
    total = statistics.median(pss)
    answered = [w for w in weights if w is not None]
    bench_report(
        f"fleet of {BOTS} paper bots, forked workers, 1 tick/s, {elapsed:.0f} s",
        {
            "workers started (ramp)": f"{ramp_s:.0f} s",
            "tick lag (heartbeat age beyond 1 s)": f"p50 {_pct(lags, 0.5):.2f} s, p99 {_pct(lags, 0.99):.2f} s",
            "memory, whole fleet (PSS)": f"{total:.0f} MB, {total / BOTS:.1f} MB per bot "
            f"({total / BOTS / ccxt_floor:.2f}x a bare 'import ccxt', {ccxt_floor:.0f} MB)",
            "live events stored": f"{events_per_s:.0f} /s",
            "exchange requests (public, this address)": (
                f"median {statistics.median(answered)} per minute, max {max(answered)}" if answered else "no answer"
            )
            + f" ({len(weights) - len(answered)} of {len(weights)} samples unanswered within 5 s)",
            "dashboard page (in-process)": f"p95 {_pct(pages, 0.95):.0f} ms vs {idle_page:.0f} ms idle "
            f"({_pct(pages, 0.95) / idle_page:.1f}x)",
            "load average (1 min) on 2 cores": f"median {statistics.median(loads):.1f}, max {max(loads):.1f}",
        },
    )
    Bot.objects.filter(pk__in=[b.pk for b in bots]).update(desired_state="stopped")


def _fleet_pss(supervisor: Fleet) -> float:
    workers = sum(pss_mb(w.pid) for w in supervisor.workers.values())
    template = supervisor.template.pid if supervisor.template is not None else None
    return workers + (pss_mb(template) if template else 0.0)
