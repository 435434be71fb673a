"""Order path overhead: place_order (gate + audit + database) against a bare ccxt create_order, both to the sandbox."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from apps.bots.models import Bot
from apps.exchanges.services import exchange_account_create
from apps.strategies.base import OrderIntent
from apps.trading.gate import place_order
from tests.keys import Key

pytestmark = [pytest.mark.bench, pytest.mark.django_db]
Report = Callable[[str, dict[str, str]], None]
N = 200
SYMBOL = "BTC/USDT"


def _percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def _ms(samples: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(samples) * 1000, "p99": _percentile(samples, 99) * 1000}


def test_bench_order_path_overhead(sandbox: Any, new_key: Callable[..., Key], bench_report: Report) -> None:
    sandbox.admin.set_price(SYMBOL, "60000", hold=True)
    bare_key, gated_key = new_key(), new_key()
    for key in (bare_key, gated_key):
        sandbox.admin.set_rate_limit(1_000_000, api_key=key.api_key)
    account, _ = exchange_account_create(
        label="bench-orders",
        exchange_id="sandbox",
        credentials=gated_key.form(),
        attested_no_withdrawals=False,
        actor="system:bench",
    )
    bot = Bot.objects.create(
        name="bench-bot",
        account=account,
        strategy="grid",
        symbols=[SYMBOL],
        mode=Bot.Mode.LIVE,
        max_order_notional=Decimal("1000"),
        max_position_notional=Decimal("1000000"),
        max_open_orders=N + 10,
        max_orders_per_minute=N * 10,
        daily_loss_limit=Decimal("100000"),
        max_drawdown_pct=Decimal("90"),
        desired_state=Bot.Desired.RUNNING,  # started: the gate refuses a bot told to stop
    )
    # The floor: plain ccxt with the same rate limiting as the port's clients.
    bare = bare_key.raw_ccxt(sandbox.url)
    bare.enableRateLimit = True
    gated = gated_key.exchange()
    bare.load_markets()
    gated.markets()

    bare_times: list[float] = []
    for i in range(N):
        start = time.perf_counter()
        bare.create_order(SYMBOL, "limit", "buy", 0.001, 50000, {"newClientOrderId": f"bare-{i}"})
        bare_times.append(time.perf_counter() - start)

    gated_times: list[float] = []
    for i in range(N):
        intent = OrderIntent(SYMBOL, "buy", "limit", Decimal("0.001"), Decimal("50000"), f"bench-{i}")
        start = time.perf_counter()
        place_order(bot=bot, intent=intent, exchange=gated)
        gated_times.append(time.perf_counter() - start)

    assert len(sandbox.admin.orders(gated_key.api_key)) == N
    sandbox.admin.release_price(SYMBOL)
    b, g = _ms(bare_times), _ms(gated_times)
    bench_report(
        f"order path: place_order (gate + audit + DB) vs bare ccxt create_order, {N} limit orders each",
        {
            "bare ccxt p50 / p99": f"{b['p50']:.2f} ms / {b['p99']:.2f} ms",
            "place_order p50 / p99": f"{g['p50']:.2f} ms / {g['p99']:.2f} ms",
            "overhead p50 / p99": f"{g['p50'] - b['p50']:.2f} ms / {g['p99'] - b['p99']:.2f} ms",
        },
    )
