"""Faults 4-7: the exchange misbehaves under a trading fleet (the sandbox's fault switches, apps/sandbox/faults.py).

Each test runs the shared scenario (tests/faults/support.py: three live grid bots on keys of their own and a
paper bot, real workers under a real fleet supervisor, the price swinging across the grids), switches a fault
on for some of the live keys only, and then checks that the exchange and the database agree: nothing lost,
nothing doubled. Every switch is cleared after the test (`faults_cleared`).

4. An order accepted, then its answer lost (connection dropped, or held past the client's timeout): the port
   looks it up by its client order id and adopts it; one order on the exchange, one row.
5. 5xx and 429 bursts while the bots tick, then while a kill cancels: the port backs off (the exchange sees a
   few requests, not a storm), the kill still leaves nothing open and its report says how long the exchange
   delayed it.
6. Every websocket dropped and refused for a while (the market-data feed's; the bots take their fills by REST
   and have no user-data socket): fills keep arriving, none lost or doubled, the feed comes back by itself.
7. The exchange's clock 2 s behind ours, then 70 s ahead: each client syncs its time difference once (-1021
   once), no order is sent twice with a stale timestamp, and the bots keep trading.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from typing import Any

import pytest
import redis
from django.conf import settings

from apps.killswitch.models import KillRun
from apps.killswitch.services import kill_request
from apps.sandbox.admin import Scope
from apps.trading.marketdata import ticker_key
from apps.trading.models import Fill, Order
from tests.faults.exchange_support import (  # noqa: F401 - fixtures
    FaultLog,
    exchange_control_worker,
    faults_cleared,
    new_orders_everywhere,
    rows_by_client_order_id,
    worker_env,
)
from tests.faults.support import SYMBOL, FaultScenario, Outage, _now_ms, fault_report
from tests.fixtures.sandbox import SandboxProcess
from tests.fleet_support import ControlWorker, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("faults_cleared")]

FAULT_TIMEOUT_S = 150.0
HOLD_MS = 3500  # past the workers' exchange timeout (exchange_support.WORKER_EXCHANGE_TIMEOUT_MS)
BURST_S = 4.0
RETRY_AFTER_S = 2
KILL_REFUSALS = 3  # the kill's cancel-alls answered 429, and as many 500
REFUSE_S = 5
PHASE_TIMEOUT_S = 20.0


def _live_keys(scenario: FaultScenario) -> list[str]:
    return [key.api_key for _, key in scenario.live]


# -- 4. accepted, then the answer lost --------------------------------------------------------------------


def test_an_order_accepted_then_timed_out_is_adopted_by_its_client_order_id(
    fault_scenario: FaultScenario, sandbox: SandboxProcess
) -> None:
    scenario = fault_scenario.start()
    admin, keys = sandbox.admin, _live_keys(fault_scenario)
    dropped, held = keys[0], keys[1]

    def faulted(key: str) -> list[dict[str, Any]]:
        return FaultLog.read(sandbox, keys).of("timeout_after_accept", key=key)

    with Outage("timeout_after_accept") as outage:
        admin.timeout_after_accept(count=2, drop=True, api_key=dropped)
        wait_until(lambda: len(faulted(dropped)) >= 2, "two orders accepted, their answers dropped", PHASE_TIMEOUT_S)
        admin.timeout_after_accept(count=1, hold_ms=HOLD_MS, api_key=held)
        wait_until(lambda: faulted(held), "an order accepted, its answer held", PHASE_TIMEOUT_S)
        lost = faulted(dropped) + faulted(held)

        def adopted() -> bool:
            return all(
                Order.objects.filter(
                    client_order_id=e["client_order_id"], exchange_order_id=str(e["order_id"])
                ).exists()
                for e in lost
            )

        wait_until(adopted, "every order whose answer was lost adopted by its row", PHASE_TIMEOUT_S)
    admin.clear_faults()
    recovered = scenario.wait_ticking(after=outage.ended)
    books = scenario.settled()

    cids = [e["client_order_id"] for e in lost]
    on_exchange = Counter(
        o["clientOrderId"] for key in (dropped, held) for o in admin.orders(key) if o["clientOrderId"] in cids
    )
    rows = rows_by_client_order_id(cids)
    counts = admin.order_count()
    # Placements the exchange received but did not take ("Duplicate order sent." to a blind re-send, say).
    resent = {key: counts.for_key(key) - counts.accepted_by_key.get(key, 0) for key in (dropped, held)}
    books.duplicates += sum(n - 1 for n in on_exchange.values() if n > 1) + sum(n - 1 for n in rows.values() if n > 1)
    fault_report(
        "exchange_timeout_after_accept",
        duration_s=outage.duration_s,
        books=books,
        recovery_s=recovered - outage.ended_mono,
    )

    assert len(lost) == 3 and len(set(cids)) == 3, lost
    assert on_exchange == dict.fromkeys(cids, 1), on_exchange  # one order each on the exchange...
    assert rows == dict.fromkeys(cids, 1), rows  # ...and one row each, which knows it
    assert resent == dict.fromkeys((dropped, held), 0), resent  # looked up, never sent a second time
    books.assert_clean()


# -- 5. 5xx and 429 bursts, while ticking and while a kill cancels ------------------------------------------

# A few 5xx'd requests per second per key (the port's backoff: 0.25, 0.5, 1 s, then the next tick): a client
# retrying without backoff would send hundreds.
MAX_FAULTED_PER_S = 3.0
DELAY_NOTE = re.compile(r"the exchange refused or delayed (\d+) request\(s\); cancels retried for ([\d.]+) s")


def _kill_under_faults(scenario: FaultScenario, sandbox: SandboxProcess, worker: ControlWorker) -> KillRun:
    """Press the kill while the exchange answers its cancel-alls 429, then 500 (only a kill cancels all: the bots
    cancel one order at a time); the finished run."""
    admin = sandbox.admin
    worker.wait_ready()
    assert all(admin.open_orders(key) for key in _live_keys(scenario)), "every grid rests orders before the kill"
    cancel_all: Scope = {"path_prefix": "/api/v3/openOrders", "method": "DELETE", "count": KILL_REFUSALS}
    admin.rate_limit_burst(retry_after_s=1, **cancel_all)
    admin.fail_requests(500, body="json", **cancel_all)
    run = kill_request(actor="system:test", reason="exchange faults under a kill")
    finished: KillRun = wait_until(
        lambda: KillRun.objects.filter(pk=run.pk, status__in=["done", "failed"]).first(),
        "the control worker to finish the kill",
        timeout=90,
    )
    return finished


def test_5xx_and_429_bursts_are_backed_off_and_a_kill_still_leaves_nothing_open(
    fault_scenario: FaultScenario,
    sandbox: SandboxProcess,
    exchange_control_worker: ControlWorker,  # noqa: F811
) -> None:
    scenario = fault_scenario.start()
    admin, keys = sandbox.admin, _live_keys(fault_scenario)
    limited, failing = keys[0], keys[1]
    with Outage("bursts") as outage:
        admin.rate_limit_burst(seconds=BURST_S, retry_after_s=RETRY_AFTER_S, api_key=limited)
        admin.fail_requests(500, body="json", seconds=BURST_S, api_key=failing)  # Binance's -1000
        time.sleep(BURST_S)
    admin.clear_faults()
    during_ticks = FaultLog.read(sandbox, keys)
    recovered = scenario.wait_ticking(after=outage.ended)
    books = scenario.settled()
    fault_report(
        "exchange_5xx_429_bursts", duration_s=outage.duration_s, books=books, recovery_s=recovered - outage.ended_mono
    )
    books.assert_clean()
    throttled, failed = during_ticks.count("rate_limit", key=limited), during_ticks.count("error", key=failing)
    # Each of the key's two clients (ticks, dead-man's switch) waits the Retry-After between two attempts.
    assert 1 <= throttled <= 2 * (1 + BURST_S / RETRY_AFTER_S), throttled
    assert 1 <= failed <= MAX_FAULTED_PER_S * BURST_S, failed

    run = _kill_under_faults(scenario, sandbox, exchange_control_worker)
    during_kill = FaultLog.read(sandbox, keys)
    cancel = next(s["detail"] for s in run.steps if s["name"] == "cancel")
    assert run.status == KillRun.Status.DONE, run.problems
    assert run.orders_still_open == 0 and not run.open_unknown
    assert all(admin.open_orders(key) == [] for key in keys)
    note = DELAY_NOTE.search(cancel)
    assert note is not None, cancel
    assert int(note.group(1)) >= 1 and float(note.group(2)) > 0
    kill_faulted = sum(during_kill.per_key("rate_limit").values()) + sum(during_kill.per_key("error").values())
    kill_faulted -= throttled + failed
    # Every refusal was the kill's, and its report counts each one.
    assert kill_faulted == 2 * KILL_REFUSALS == int(note.group(1)), (kill_faulted, cancel)


# -- 6. websockets dropped ----------------------------------------------------------------------------------


def _feed_written_after(scenario: FaultScenario, when: float) -> bool:
    """Whether the host's market-data feed has written the symbol's ticker after `when` (epoch seconds)."""
    bot = scenario.bots[0]
    raw = redis.Redis.from_url(settings.REDIS_URL).get(ticker_key(bot.host, "sandbox", SYMBOL))
    return raw is not None and float(json.loads(raw)["at"]) > when


def _live_fills(scenario: FaultScenario) -> int:
    return Fill.objects.filter(account_id__in=[bot.account_id for bot, _ in scenario.live]).count()


def test_websockets_dropped_and_refused_lose_no_fill_and_the_feed_comes_back(
    fault_scenario: FaultScenario, sandbox: SandboxProcess
) -> None:
    fault_scenario.fleet.market_data = True  # the host's feed, on the exchange's websocket, as runfleet runs it
    scenario = fault_scenario.start()
    admin = sandbox.admin
    wait_until(lambda: _feed_written_after(scenario, time.time() - 1), "the market-data feed streaming", 30)
    refused_before = admin.faults().count("websockets_refused")
    with Outage("websockets") as outage:
        dropped = admin.drop_websockets("all", refuse_s=REFUSE_S, abrupt=True).dropped
        fills = _live_fills(scenario)
        time.sleep(REFUSE_S)
        # The bots take their fills by REST: they kept coming while no websocket could be opened.
        fills_while_refused = _live_fills(scenario) - fills
    wait_until(lambda: _feed_written_after(scenario, time.time() - 1), "the feed streaming again", 40, every=0.25)
    recovered = time.monotonic()
    books = scenario.settled()
    fault_report(
        "exchange_websockets_dropped",
        duration_s=outage.duration_s,
        books=books,
        recovery_s=recovered - outage.ended_mono,
    )

    assert dropped is not None and dropped >= 1  # the feed's sockets were open, and were cut
    assert admin.faults().count("websockets_refused") > refused_before  # the feed tried again meanwhile
    assert fills_while_refused > 0
    books.assert_clean()


# -- 7. the clock ------------------------------------------------------------------------------------------


def test_a_skewed_clock_is_synced_once_per_client_and_the_bots_keep_trading(
    fault_scenario: FaultScenario, sandbox: SandboxProcess
) -> None:
    scenario = fault_scenario.start()
    admin, keys = sandbox.admin, _live_keys(fault_scenario)
    skews: dict[int, FaultLog] = {}
    with Outage("clock") as outage:
        for offset_ms in (-2000, 70_000):  # the exchange 2 s behind us, then 70 s ahead
            before = FaultLog.read(sandbox, keys)
            admin.set_clock_offset(offset_ms)
            since = _now_ms()
            new_orders_everywhere(
                scenario, since, f"every live bot trading with the exchange's clock at {offset_ms} ms"
            )
            after = FaultLog.read(sandbox, keys)
            skews[offset_ms] = FaultLog(after.entries[len(before.entries) :])
        admin.clear_faults("clock_offset")
    since = _now_ms()
    new_orders_everywhere(scenario, since, "every live bot trading again with the clocks agreeing")
    recovered = time.monotonic()
    books = scenario.settled()
    fault_report(
        "exchange_clock_skew", duration_s=outage.duration_s, books=books, recovery_s=recovered - outage.ended_mono
    )

    for offset_ms, log in skews.items():
        refused = log.per_key("clock_offset")
        # Each key has two clients (the ticks', the dead-man's switch's): each is refused once, then synced.
        assert all(refused[key] <= 2 for key in keys), (offset_ms, refused)
        assert all(log.count("clock_offset", key=key, method="POST", path="/api/v3/order") <= 1 for key in keys)
        assert sum(refused.values()) >= 1, offset_ms  # the skew was met, and got through
    books.assert_clean()
