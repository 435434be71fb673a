"""The host's shared market-data feed: real Valkey, the real sandbox exchange and ccxt (REST and ccxt.pro).

The feed process is the one `manage.py runfleet` starts (`Fleet(market_data=True)`); the bots are real
paper bot workers. REST reads are counted in the sandbox's access log (method and path per request): the
ticker and klines requests are what a tick polls when it reads the exchange itself.

The bots trade nothing: ma_cross with a 1000-candle slow window never has the 1001 closes it needs, so a
tick reads its price and closes and stops there. A paper order's fill and a market order's reference price
read the feed too (the last test).
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from apps.bots.fleet import Fleet
from apps.bots.models import Bot
from apps.exchanges import port
from apps.exchanges.models import ExchangeAccount
from apps.strategies.base import OrderIntent
from apps.trading import marketdata
from apps.trading.gate import place_order
from apps.trading.models import Order, Position
from apps.vault import client as vault
from tests.bots.conftest import account  # noqa: F401
from tests.fleet_support import fleet_vault, worker_env  # noqa: F401
from tests.keys import Key

SYMBOL = "ETH/USDT"
VENUE = "sandbox"
MARKET_READS = re.compile(r"GET /api/v3/(ticker|klines)\b")
START_TIMEOUT_S = 90.0


def rest_reads(sandbox: Any) -> int:
    """Ticker and klines requests the sandbox has answered so far (its access log, written just after each answer)."""
    time.sleep(0.3)
    return len(MARKET_READS.findall(sandbox.log_text()))


def quiet_bot(acct: ExchangeAccount, name: str, *, desired: str = "running") -> Bot:
    return Bot.objects.create(
        name=name,
        account=acct,
        strategy="ma_cross",
        params={"fast": 500, "slow": 1000, "order_amount": "0.001"},
        symbols=[SYMBOL],
        mode="paper",
        tick_interval_s=1,
        max_order_notional=Decimal("100"),
        max_position_notional=Decimal("1000"),
        daily_loss_limit=Decimal("100"),
        max_drawdown_pct=Decimal("10"),
        desired_state=desired,
    )


def wait_for(check: Callable[[], Any], what: str, fleet: Fleet | None = None, timeout: float = START_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fleet is not None:
            fleet.sync_once()
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def run_for(seconds: float, fleet: Fleet) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fleet.sync_once()
        time.sleep(0.2)


def feed_fresh(host: str = "local") -> bool:
    ticker, _ = marketdata.cached_ticker(host=host, venue=VENUE, symbol=SYMBOL, max_age=2.0)
    closes, _ = marketdata.cached_closes(host=host, venue=VENUE, symbol=SYMBOL, limit=1000, max_age=3.0)
    return ticker is not None and closes is not None


def beats(bots: list[Bot]) -> dict[int, float]:
    rows = Bot.objects.filter(pk__in=[b.pk for b in bots]).values_list("pk", "last_heartbeat")
    return {pk: beat.timestamp() if beat else 0.0 for pk, beat in rows}


def ticked_since(bots: list[Bot], since: float) -> Callable[[], bool]:
    return lambda: all(beat > since for beat in beats(bots).values())


@pytest.fixture
def feeding_fleet(
    fleet_vault: vault.ProcessVault,  # noqa: F811
    worker_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> Iterator[Fleet]:
    supervisor = Fleet(
        process_vault=fleet_vault, env=worker_env, grace_s=10, log_dir=tmp_path / "logs", market_data=True
    )
    try:
        yield supervisor
    finally:
        supervisor.shutdown()
        for log in sorted((tmp_path / "logs").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def valkey() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    for key in client.scan_iter(f"{marketdata.KEY_PREFIX}:*"):
        client.delete(key)
    client.close()


@pytest.mark.django_db(transaction=True)
def test_bots_read_the_shared_feed_and_a_price_change_reaches_them_through_the_stream(
    feeding_fleet: Fleet,
    account: Callable[[str], tuple[ExchangeAccount, Key]],  # noqa: F811
    sandbox: Any,
    valkey: redis.Redis,
) -> None:
    acct, _ = account("Market data shared")
    bots = [quiet_bot(acct, f"md-shared-{i}") for i in range(3)]
    # A position to be marked at each tick's price: where the tick's price shows.
    Position.objects.create(bot=bots[0], symbol=SYMBOL, base_quantity=Decimal("0.01"), average_entry=Decimal("1"))
    wait_for(
        lambda: feed_fresh() and Bot.objects.filter(pk__in=[b.pk for b in bots], observed_state="running").count() == 3,
        "feed and bots",
        feeding_fleet,
    )
    # Ticks that started before the feed was fresh may have read by REST: begin counting after two more.
    settled = time.time() + 2
    wait_for(ticked_since(bots, settled), "ticks after the feed is up", feeding_fleet)

    before, since = rest_reads(sandbox), time.time()
    run_for(8, feeding_fleet)
    assert ticked_since(bots, since + 5)(), beats(bots)  # every bot kept ticking...
    assert rest_reads(sandbox) - before == 0  # ...without one ticker or klines request

    # A jump on the exchange reaches the bots by the stream, still without a REST read.
    old = sandbox.admin.price(SYMBOL).price
    try:
        sandbox.admin.set_price(SYMBOL, old * 2, hold=False)
        before = rest_reads(sandbox)

        def marked_high() -> bool:
            last = Position.objects.get(bot=bots[0], symbol=SYMBOL).last_price
            return last is not None and last > old * Decimal("1.5")

        wait_for(marked_high, "the new price in the bot's position", feeding_fleet, timeout=20)
        assert rest_reads(sandbox) - before == 0
        cached, _ = marketdata.cached_ticker(host="local", venue=VENUE, symbol=SYMBOL, max_age=3.0)
        assert cached is not None and cached.price > old * Decimal("1.5")
    finally:
        sandbox.admin.set_price(SYMBOL, old, hold=False)
    Bot.objects.filter(pk__in=[b.pk for b in bots]).update(desired_state="stopped")


@pytest.mark.django_db(transaction=True)
def test_without_the_feed_bots_fall_back_to_rest_and_still_tick(
    feeding_fleet: Fleet,
    account: Callable[[str], tuple[ExchangeAccount, Key]],  # noqa: F811
    sandbox: Any,
    valkey: redis.Redis,
    tmp_path: Path,
) -> None:
    acct, _ = account("Market data fallback")
    bots = [quiet_bot(acct, f"md-fallback-{i}") for i in range(2)]
    wait_for(
        lambda: feed_fresh() and Bot.objects.filter(pk__in=[b.pk for b in bots], observed_state="running").count() == 2,
        "feed and bots",
        feeding_fleet,
    )

    # A feed that dies is started again by the supervisor.
    first = feeding_fleet.market_data_proc
    assert first is not None
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    wait_for(
        lambda: feeding_fleet.market_data_proc is not None and feeding_fleet.market_data_proc.pid != first.pid,
        "the feed restarted",
        feeding_fleet,
        timeout=15,
    )
    wait_for(feed_fresh, "the restarted feed fresh", feeding_fleet)

    # Stopped for good: after about two tick intervals (3 s at least) the bots read the exchange themselves.
    feeding_fleet.market_data = False
    feeding_fleet.stop_market_data()
    time.sleep(marketdata.MIN_MAX_AGE_S + 0.5)
    before, since = rest_reads(sandbox), time.time()
    run_for(6, feeding_fleet)
    assert feeding_fleet.market_data_proc is None
    assert ticked_since(bots, since + 3)(), beats(bots)
    # Each tick reads a ticker and klines by REST: two bots ticking each second for 6 s.
    assert rest_reads(sandbox) - before >= 2 * 2 * 3
    # ... and each worker says so once (per kind and symbol, per minute), not at every tick.
    for bot in bots:
        log = (tmp_path / "logs" / f"bot-{bot.pk}.log").read_text(errors="replace")
        assert log.count(f"price of {VENUE} {SYMBOL} read by REST") == 1, log[-2000:]
        assert log.count(f"closes of {VENUE} {SYMBOL} read by REST") == 1, log[-2000:]
    Bot.objects.filter(pk__in=[b.pk for b in bots]).update(desired_state="stopped")


@pytest.mark.django_db
def test_a_fresh_entry_is_used_and_a_stale_or_short_one_is_not(
    account: Callable[[str], tuple[ExchangeAccount, Key]],  # noqa: F811
    sandbox: Any,
    valkey: redis.Redis,
) -> None:
    acct, _ = account("Market data stale")
    bot = quiet_bot(acct, "md-stale", desired="stopped")
    exchange = port.Exchange(exchange_id=VENUE)
    ticker_key = marketdata.ticker_key(bot.host, VENUE, SYMBOL)
    closes_key = marketdata.closes_key(bot.host, VENUE, SYMBOL)
    real = sandbox.admin.price(SYMBOL).price

    def put(key: str, age_s: float, **entry: Any) -> None:
        valkey.set(key, json.dumps({**entry, "at": time.time() - age_s}), ex=30)

    # Fresh: the cache's figures (nothing like the exchange's), and no request.
    put(ticker_key, 0.5, bid="10", ask="12", last="11")
    put(closes_key, 0.5, closes=["5"] * 70)
    before = rest_reads(sandbox)
    assert marketdata.market_price(bot=bot, exchange=exchange, symbol=SYMBOL) == Decimal("11")
    assert marketdata.market_closes(bot=bot, exchange=exchange, symbol=SYMBOL, limit=60) == (Decimal(5),) * 60
    assert rest_reads(sandbox) - before == 0

    # Older than two tick intervals (3 s at least): the exchange's figures, by REST.
    put(ticker_key, marketdata.max_age_s(bot.tick_interval_s) + 1, bid="10", ask="12", last="11")
    price = marketdata.market_price(bot=bot, exchange=exchange, symbol=SYMBOL)
    assert abs(price - real) < real / 10
    put(closes_key, marketdata.max_age_s(bot.tick_interval_s) + 1, closes=["5"] * 70)
    closes = marketdata.market_closes(bot=bot, exchange=exchange, symbol=SYMBOL, limit=60)
    assert len(closes) == 60 and all(abs(c - real) < real / 10 for c in closes)
    # Fresh but shorter than asked for: REST too.
    put(closes_key, 0.5, closes=["5"] * 30)
    closes = marketdata.market_closes(bot=bot, exchange=exchange, symbol=SYMBOL, limit=60)
    assert len(closes) == 60 and Decimal(5) not in closes
    # Missing: REST.
    valkey.delete(ticker_key)
    assert abs(marketdata.market_price(bot=bot, exchange=exchange, symbol=SYMBOL) - real) < real / 10
    assert rest_reads(sandbox) - before == 4
    exchange.close()


@pytest.mark.django_db
def test_paper_fills_and_the_gates_price_read_the_shared_feed_not_the_exchange(
    account: Callable[[str], tuple[ExchangeAccount, Key]],  # noqa: F811
    sandbox: Any,
    valkey: redis.Redis,
) -> None:
    """A market order's reference price and a paper order's fill price come from the fresh feed entry."""
    acct, _ = account("Market data paper")
    bot = quiet_bot(acct, "md-paper")  # wanted running (the gate refuses a stopped bot); no supervisor here
    exchange = port.Exchange(exchange_id=VENUE)
    entry = {"bid": "100", "ask": "101", "last": "100.5", "at": time.time()}
    valkey.set(marketdata.ticker_key(bot.host, VENUE, SYMBOL), json.dumps(entry), ex=30)
    before = rest_reads(sandbox)
    buy = OrderIntent(SYMBOL, "buy", "market", Decimal("0.01"), None, "md-paper-buy")
    order = place_order(bot=bot, intent=buy, exchange=exchange)
    assert order.status == Order.Status.FILLED and order.average == Decimal("101")  # the feed's ask
    rest = OrderIntent(SYMBOL, "sell", "limit", Decimal("0.005"), Decimal("100"), "md-paper-sell")
    resting = place_order(bot=bot, intent=rest, exchange=exchange)
    assert resting.status == Order.Status.FILLED and resting.average == Decimal("100")  # the bid crossed it
    assert rest_reads(sandbox) - before == 0
    # Without a fresh entry the same code reads the exchange's book (REST): the fill is near the real price.
    valkey.delete(marketdata.ticker_key(bot.host, VENUE, SYMBOL))
    real = sandbox.admin.price(SYMBOL).price
    again = place_order(
        bot=bot, intent=OrderIntent(SYMBOL, "buy", "market", Decimal("0.001"), None, "md-2"), exchange=exchange
    )
    assert again.average is not None and abs(again.average - real) < real / 10
    assert rest_reads(sandbox) - before >= 2  # the gate's price and the fill's bid/ask
    exchange.close()
