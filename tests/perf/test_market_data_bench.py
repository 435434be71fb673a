"""Exchange requests per minute of 1, 10 and 30 paper bots, with and without the host's shared market-data feed.

Paper bots (ma_cross, 9/21, the defaults) on forked workers tick once a second on the sandbox exchange. For
each fleet size the bench counts, over BENCH_MD_SECONDS (30 by default) once every worker is running, the
public REST requests the sandbox answered (its access log: every `GET /api/v3/...`, refused ones included)
and those it refused with 429 (it limits requests per address at 1200 a minute, as Binance does). Once
without the feed (each bot polls its ticker and klines every tick), once with it (`Fleet(market_data=True)`:
one websocket feed for the host, read through Valkey). The floor is one bot's own polling: each figure is
shown as a ratio to it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from apps.bots.fleet import Fleet
from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.trading import marketdata
from apps.trading.models import BotLedger
from apps.vault import client as vault
from tests.bots.conftest import account  # noqa: F401
from tests.fleet_support import fleet_vault, worker_env  # noqa: F401
from tests.keys import Key

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]
Report = Callable[[str, dict[str, str]], None]
SECONDS = float(os.environ.get("BENCH_MD_SECONDS", "30"))
SIZES = (1, 10, 30)
SYMBOL = "BTC/USDT"
REQUEST = re.compile(r"aiohttp\.access GET /api/v3/\S+ (\d{3})")


def _requests(sandbox: Any) -> tuple[int, int]:
    """Public REST requests answered so far, and how many of them were refused with 429."""
    time.sleep(0.3)  # the access log line follows the answer
    statuses = REQUEST.findall(sandbox.log_text())
    return len(statuses), statuses.count("429")


def _ticks(bots: list[Bot]) -> int:
    """Ticks the bots have completed (each moves its ledger's generation on by one)."""
    return sum(BotLedger.objects.filter(bot__in=bots).values_list("generation", flat=True))


def _bot(acct: ExchangeAccount, name: str) -> Bot:
    return Bot.objects.create(
        name=name,
        account=acct,
        strategy="ma_cross",
        params={"fast": 9, "slow": 21, "order_amount": "0.001"},
        symbols=[SYMBOL],
        mode="paper",
        tick_interval_s=1,
        max_order_notional=Decimal("1000"),
        max_position_notional=Decimal("5000"),
        daily_loss_limit=Decimal("100000"),
        max_drawdown_pct=Decimal("90"),
        desired_state="running",
    )


@pytest.fixture
def fleets(
    fleet_vault: vault.ProcessVault,  # noqa: F811
    worker_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> Iterator[Callable[[bool], Fleet]]:
    started: list[Fleet] = []

    def make(feed: bool) -> Fleet:
        supervisor = Fleet(
            process_vault=fleet_vault,
            env=worker_env,
            grace_s=10,
            log_dir=tmp_path / ("feed" if feed else "polling"),
            worker_mode="fork",
            market_data=feed,
        )
        started.append(supervisor)
        return supervisor

    yield make
    for supervisor in started:
        supervisor.shutdown()


def _wait(check: Callable[[], bool], what: str, supervisor: Fleet, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        supervisor.sync_once()
        time.sleep(0.5)


def _all_running(ids: list[int]) -> Callable[[], bool]:
    return lambda: Bot.objects.filter(pk__in=ids, observed_state="running").count() == len(ids)


def _feed_fresh() -> bool:
    ticker, _ = marketdata.cached_ticker(host="local", venue="sandbox", symbol=SYMBOL, max_age=marketdata.max_age_s(1))
    return ticker is not None


def _run(supervisor: Fleet, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        supervisor.sync_once()
        time.sleep(0.5)


def test_exchange_requests_with_and_without_the_shared_feed(
    fleets: Callable[[bool], Fleet],
    account: Callable[[str], tuple[ExchangeAccount, Key]],  # noqa: F811
    sandbox: Any,
    bench_report: Report,
) -> None:
    acct, _ = account("Bench market data")
    per_minute: dict[tuple[bool, int], float] = {}
    refused: dict[tuple[bool, int], float] = {}
    ticks: dict[tuple[bool, int], float] = {}
    for feed in (False, True):
        supervisor = fleets(feed)
        bots: list[Bot] = []
        for size in SIZES:
            bots += [_bot(acct, f"md-bench-{'feed' if feed else 'poll'}-{i}") for i in range(len(bots), size)]
            _wait(_all_running([b.pk for b in bots]), f"{size} workers", supervisor)
            if feed:
                _wait(_feed_fresh, "the feed", supervisor)
            _run(supervisor, 5)  # every new worker past its first tick (and its markets loaded, when polling)
            (before, before_429), ticks_before, started = _requests(sandbox), _ticks(bots), time.monotonic()
            _run(supervisor, SECONDS)
            after, after_429 = _requests(sandbox)
            elapsed = time.monotonic() - started
            ticks[feed, size] = (_ticks(bots) - ticks_before) * 60 / elapsed
            per_minute[feed, size] = (after - before) * 60 / elapsed
            refused[feed, size] = (after_429 - before_429) * 60 / elapsed
        Bot.objects.filter(pk__in=[b.pk for b in bots]).update(desired_state="stopped")
        supervisor.shutdown()

    floor = per_minute[False, 1]
    figures = {"floor: one bot polling": f"{floor:.0f} requests/min"}
    for feed in (False, True):
        for size in SIZES:
            rate = per_minute[feed, size]
            figures[f"{'shared feed' if feed else 'polling'} {size:>2} bots"] = (
                f"{rate:.0f} requests/min ({refused[feed, size]:.0f} refused with 429), {rate / floor:.2f}x the floor; "
                f"{ticks[feed, size]:.0f} ticks/min"
            )
    for size in SIZES:
        figures[f"feed/polling at {size} bots"] = f"{per_minute[True, size] / max(per_minute[False, size], 1):.3f}"
    bench_report(f"exchange requests per minute, paper bots at 1 tick/s, {SECONDS:.0f} s each", figures)
    # The point of the feed: the fleet's request weight stays flat as bots are added, while the bots tick.
    assert per_minute[True, 30] <= floor / 2
    assert ticks[True, 30] >= ticks[False, 1] * 10
