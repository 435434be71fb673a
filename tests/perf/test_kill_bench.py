"""Kill latency against its floor, with 1, 5 and 20 live bots x 50 resting orders.

For each size, in the same run:
- the floor: bare async ccxt (no botconsole code), one client per account already built with its markets and
  connections warm, cancelling all the accounts' orders at once and checking that none is left (cancel-all
  then open orders, every account in parallel, no rate limiter);
- the kill: click (kill_request) to zero open orders on the exchange, taken from the exchange's own
  cancellation times (the sandbox's updateTime of every order the kill cancelled, read through its admin API
  once the run has finished, which also confirms that nothing is open); the difference to the floor and the
  ratio; click to every bot worker process gone; click to the report "verified".

Each bot is a live bot on its own sandbox account with a real Vault token. Up to KILL_BENCH_WORKERS bots (5 by
default) run real bot workers started by the fleet supervisor, each resting its 50 orders through its own grid
strategy and the order gate; above that (20 real workers are too heavy for 2 cores shared with the rest) the
bots have no worker: they log in through their own AppRole as a worker would and their 50 orders are placed
through ccxt on their key. The kill is executed by a real control worker process (`celery -Q control`), as in
production: the queue hop is part of the figure. KILL_BENCH_BOTS=5 measures one size; KILL_BENCH_RUNS runs each.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt.async_support
import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from apps.bots.fleet import Fleet
from apps.bots.halts import global_halt_clear
from apps.bots.identities import token_accessor_report
from apps.bots.models import Bot
from apps.exchanges.services import exchange_account_create
from apps.killswitch.models import KillRun
from apps.killswitch.services import kill_request
from apps.sandbox.ccxt_config import point_at_sandbox
from apps.vault import client as vault
from tests.fleet_support import (  # noqa: F401 - fixtures
    ControlWorker,
    FleetLoop,
    alive,
    fleet,
    fleet_vault,
    wait_until,
    worker_env,
)
from tests.harness import Harness
from tests.keys import Key

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]
Report = Callable[[str, dict[str, str]], None]

SYMBOL = "BTC/USDT"
BOT_COUNTS = tuple(int(n) for n in os.environ.get("KILL_BENCH_BOTS", "1,5,20").split(","))
WORKERS_UP_TO = int(os.environ.get("KILL_BENCH_WORKERS", "5"))
RUNS = int(os.environ.get("KILL_BENCH_RUNS", "5"))
RESTING = 50
# The bots without a worker are on a host no supervisor runs: the fleet of the worker sizes leaves them alone.
NO_FLEET_HOST = "bench-no-fleet"
GRID = {"lower": "40000", "upper": "50000", "levels": RESTING, "order_amount": "0.001"}


@pytest.fixture
def control_worker(services: Harness, sandbox_url: str, tmp_path: Path) -> Iterator[ControlWorker]:
    worker = ControlWorker(services, tmp_path / "control", sandbox_url)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


class Floor:
    """Plain async ccxt clients on the accounts' keys, built and warmed beforehand, in a loop of their own."""

    def __init__(self, keys: list[Key]) -> None:
        self.keys = keys
        self.loop = asyncio.new_event_loop()
        self.clients = self.loop.run_until_complete(self._open())

    async def _open(self) -> list[Any]:
        clients = []
        for key in self.keys:
            client = ccxt.async_support.binance({**key.form(), "enableRateLimit": False})
            point_at_sandbox(client, django_settings.SANDBOX_URL)
            clients.append(client)
        await asyncio.gather(*(c.load_markets() for c in clients))
        await asyncio.gather(*(c.fetch_open_orders(SYMBOL) for c in clients))  # connections open and signed once
        return clients

    async def _cancel_and_verify(self, client: Any) -> int:
        await client.cancel_all_orders(SYMBOL)
        return len(await client.fetch_open_orders(SYMBOL))

    async def _all(self) -> list[int]:
        return list(await asyncio.gather(*(self._cancel_and_verify(c) for c in self.clients)))

    async def _close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients))

    def measure(self) -> int:
        """Cancel everything on every account at once and check: the milliseconds it took."""
        started = time.monotonic()
        left = self.loop.run_until_complete(self._all())
        took = int((time.monotonic() - started) * 1000)
        assert left == [0] * len(self.clients)
        return took

    def close(self) -> None:
        self.loop.run_until_complete(self._close())
        self.loop.close()


def _bot(n: int, key: Key, *, worker: bool) -> Bot:
    account, _ = exchange_account_create(
        label=f"bench-kill-{key.api_key[-8:]}",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    return Bot.objects.create(
        name=f"bench-kill-{n}-{key.api_key[-6:]}",
        account=account,
        strategy="grid",
        params=GRID,
        symbols=[SYMBOL],
        mode=Bot.Mode.LIVE,
        tick_interval_s=1,
        max_order_notional=Decimal("100"),
        max_position_notional=Decimal("5000"),
        max_open_orders=RESTING + 10,
        max_orders_per_minute=1000,
        daily_loss_limit=Decimal("100000"),
        max_drawdown_pct=Decimal("90"),
        desired_state=Bot.Desired.STOPPED,  # a worker bot is started for each run, after the floor's
        **({} if worker else {"host": NO_FLEET_HOST}),
    )


def _log_in(fv: vault.ProcessVault, services: Harness, bot: Bot) -> str:
    """What a starting worker does: unwrap its SecretID and log in with its AppRole; returns the token's accessor."""
    secret_id = vault.unwrap(services.vault_addr, fv.bot_secret_id_wrapped(bot.pk).wrapping_token)["secret_id"]
    return vault.approle_login(services.vault_addr, fv.bot_role_id(bot.pk), str(secret_id)).accessor


def _rest(key: Key) -> None:
    client = key.raw_ccxt(django_settings.SANDBOX_URL)
    for _ in range(RESTING):
        client.create_order(SYMBOL, "limit", "buy", 0.001, 30000)


def _resting(sandbox: Any, keys: list[Key]) -> Callable[[], bool]:
    """Whether every key has its RESTING orders open."""
    return lambda: all(len(sandbox.admin.open_orders(k.api_key)) == RESTING for k in keys)


def _gone_at(pids: list[int], click: float, out: list[int], stop: threading.Event) -> None:
    """Milliseconds from the click until every one of `pids` has exited (appended to `out`)."""
    while not stop.is_set():
        if not any(alive(pid) for pid in pids):
            out.append(int((time.monotonic() - click) * 1000))
            return
        time.sleep(0.01)


def _zero_at(sandbox: Any, keys: list[Key], click_ms: int) -> tuple[int, int]:
    """When the last order open at the click was cancelled (ms after the click, exchange's clock); how many."""
    times = [
        int(o["updateTime"])
        for key in keys
        for o in sandbox.admin.orders(key.api_key, symbol=SYMBOL)
        if o["status"] == "CANCELED" and int(o["updateTime"]) >= click_ms
    ]
    assert all(sandbox.admin.open_orders(key.api_key) == [] for key in keys)
    return max(times) - click_ms, len(times)


def _stats(values: list[int] | list[float], unit: str = " ms") -> str:
    fmt = "{:.0f}" if unit else "{:.1f}"
    return f"p50 {fmt.format(statistics.median(values))}{unit}, max {fmt.format(max(values))}{unit}"


def test_kill_latency_against_its_floor(
    sandbox: Any,
    pinned_price: None,
    new_key: Callable[..., Key],
    fleet_vault: vault.ProcessVault,  # noqa: F811
    fleet: Fleet,  # noqa: F811
    control_worker: ControlWorker,
    services: Harness,
    bench_report: Report,
) -> None:
    figures: dict[str, str] = {}
    loop = FleetLoop(fleet).start()
    made: list[Bot] = []
    try:
        for count in BOT_COUNTS:
            workers = count <= WORKERS_UP_TO
            keys = [new_key() for _ in range(count)]
            for key in keys:
                sandbox.admin.set_rate_limit(100_000, api_key=key.api_key)
            bots = [_bot(len(made) + i, key, worker=workers) for i, key in enumerate(keys)]
            made.extend(bots)
            for bot in bots:
                if not workers:  # the fleet writes these itself for the bots it runs
                    fleet_vault.policy_write(bot.vault_role, vault.bot_policy_text(str(bot.account_id)))
                    fleet_vault.bot_role_write(bot.pk)
            floor = Floor(keys)
            zero: list[int] = []
            floors: list[int] = []
            verified: list[int] = []
            gone: list[int] = []
            try:
                for _ in range(RUNS):
                    global_halt_clear(actor="system:test")
                    with ThreadPoolExecutor(count) as pool:  # the floor, on the same accounts and as many orders
                        list(pool.map(_rest, keys))
                    time.sleep(0.2)
                    floors.append(floor.measure())
                    pids: list[int] = []
                    if workers:
                        Bot.objects.filter(pk__in=[b.pk for b in bots]).update(desired_state=Bot.Desired.RUNNING)
                        wait_until(
                            _resting(sandbox, keys),
                            f"{RESTING} resting orders placed by each bot's own worker",
                            timeout=180,
                        )
                        pids = list(loop.pids().values())
                        assert len(pids) == count and all(alive(pid) for pid in pids)
                    else:
                        with ThreadPoolExecutor(count) as pool:
                            accessors = list(pool.map(lambda b: _log_in(fleet_vault, services, b), bots))
                            list(pool.map(_rest, keys))
                        for bot, accessor in zip(bots, accessors, strict=True):
                            token_accessor_report(bot.pk, accessor, ttl_s=600)  # as the worker reports it
                    time.sleep(0.5)  # let the machine settle after placing the orders
                    stop_watch = threading.Event()
                    click_ms = int(time.time() * 1000)
                    click = time.monotonic()
                    watch = threading.Thread(target=_gone_at, args=(pids, click, gone, stop_watch), daemon=True)
                    watch.start()
                    run = kill_request(actor="system:test", reason="bench")
                    finished = KillRun.objects.filter(pk=run.pk, status__in=["done", "failed"])
                    run = wait_until(finished.first, "the control worker to finish the kill", timeout=120, every=0.02)
                    watch.join(timeout=30)
                    stop_watch.set()
                    assert run.status == KillRun.Status.DONE, run.problems
                    assert run.orders_cancelled == count * RESTING and run.orders_still_open == 0
                    at_ms, cancelled = _zero_at(sandbox, keys, click_ms)
                    assert cancelled == count * RESTING
                    zero.append(at_ms)
                    steps = {s["name"]: s for s in run.steps}
                    verified.append(int(steps["verify"]["at_ms"]))
                    timeline = ", ".join(f"{name} {s['ms']} ms (ends at {s['at_ms']})" for name, s in steps.items())
                    print(f"{count} bots: zero open at {at_ms} ms, floor {floors[-1]} ms; {timeline}")
            finally:
                floor.close()
                # Archived: the next size's kills leave these bots alone.
                Bot.objects.filter(pk__in=[b.pk for b in bots]).update(
                    desired_state=Bot.Desired.STOPPED, archived_at=timezone.now()
                )
                wait_until(lambda: not loop.pids(), "the workers of this size to stop", timeout=60)
            diff = [z - f for z, f in zip(zero, floors, strict=True)]
            ratio = [z / f for z, f in zip(zero, floors, strict=True)]
            label = f"{count:>2} bots x {RESTING} ({'real workers' if workers else 'no workers'})"
            figures |= {
                f"{label}, click to zero open": _stats(zero),
                f"{label}, floor": _stats(floors),
                f"{label}, zero open - floor": _stats(diff),
                f"{label}, zero open / floor": _stats(ratio, unit=""),
                f"{label}, click to workers gone": _stats(gone) if workers else "no workers",
                f"{label}, click to verified": f"{_stats(verified)} ({RUNS} runs)",
            }
    finally:
        loop.stop()
        for bot in made:
            if bot.host == NO_FLEET_HOST:
                fleet_vault.bot_role_delete(bot.pk)
                fleet_vault.policy_delete(bot.vault_role)
    bench_report(
        "kill latency against its floor (live bots with real Vault tokens; real control worker; sandbox)", figures
    )
