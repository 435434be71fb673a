"""The charts' JSON (/bots/<id>/chart/ and /live/chart/): who may read it, bad parameters refused with 400,
candles read from the real sandbox through the exchange port, the bot's fills, orders and grid levels on them,
and its PnL over time replayed from its fills exactly as the ledger books them."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.trading.charts import FillRow, fill_rows, pnl_points
from apps.trading.ledger import fill_record, fill_replay
from apps.trading.models import Fill, Order, Position
from apps.trading.tick import tick_run
from tests.people import Person, make_person, password_login
from tests.trading.conftest import SYMBOL, Live

pytestmark = pytest.mark.django_db
LoggedIn = Callable[[str], tuple[Client, Person]]
# BTC pinned at 60,000: the grid rests buys of 0.01 at 55,000 and 50,000 (its levels below the price).
GRID = {"lower": "50000", "upper": "65000", "levels": 4, "order_amount": "0.01"}


@pytest.fixture(autouse=True)
def _no_cached_candles() -> Iterator[None]:
    # Candles are kept a few seconds per process: each test reads the sandbox as its own prices leave it.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def traded(live: Live, make_bot: Callable[..., Bot]) -> Bot:
    """A grid bot that traded on the sandbox: two buys rested, the price fell through one, it filled."""
    bot = make_bot(params=GRID, max_position_notional=Decimal("1300"))
    tick_run(bot=bot, exchange=live.exchange)
    live.sandbox.admin.set_price(SYMBOL, "54000", hold=True)
    tick_run(bot=bot, exchange=live.exchange)
    assert Fill.objects.filter(order__bot=bot).count() == 1
    return bot


# -- who may read it -------------------------------------------------------------------------------------------------


def test_viewers_and_operators_read_both_charts(make_bot: Callable[..., Bot], logged_in: LoggedIn) -> None:
    bot = make_bot(params=GRID)
    for role in ("viewer", "operator"):
        client, _ = logged_in(role)
        response = client.get(f"/bots/{bot.pk}/chart/?tf=5m&limit=20")
        assert response.status_code == 200, response.content[:300]
        assert response["Content-Type"] == "application/json" and response["Cache-Control"].startswith("max-age=0")
        assert len(response.json()["candles"]) == 20
        fleet = client.get("/live/chart/")
        assert fleet.status_code == 200 and bot.pk in [b["id"] for b in fleet.json()["bots"]]


def _plain_bot() -> Bot:
    """A bot on an account stored without a key: enough for what is refused before any price is read."""
    account = ExchangeAccount.objects.create(
        label="charts",
        exchange_id="sandbox",
        key_fingerprint="abcd",
        key_digest="0" * 64,
        withdrawals=ExchangeAccount.Withdrawals.DISABLED,
    )
    return Bot.objects.create(
        name="charted",
        account=account,
        strategy="grid",
        params=GRID,
        symbols=[SYMBOL],
        max_order_notional=Decimal(1000),
        max_position_notional=Decimal(5000),
        daily_loss_limit=Decimal(1000),
        max_drawdown_pct=Decimal(50),
    )


def test_it_refuses_anonymous_unverified_and_role_less_users(db: None) -> None:
    bot = _plain_bot()
    urls = (f"/bots/{bot.pk}/chart/", "/live/chart/")
    for url in urls:
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    half = make_person("half", "viewer")
    client = Client()
    password_login(client, half)  # the password, not yet the code
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"] == "/accounts/otp/", url
    nobody = make_person("nobody", "viewer")
    nobody.user.groups.clear()
    client = Client()
    password_login(client, nobody)
    client.post("/accounts/otp/", {"code": nobody.code()})
    for url in urls:
        response = client.get(url)
        assert response.status_code == 403 and response.json() == {"error": "You may not view the console."}, url


# -- bad parameters --------------------------------------------------------------------------------------------------

BAD = [
    ("tf=2m", 400, "`tf` must be one of 1m, 5m, 15m, 1h, 4h, 1d."),
    ("tf=1M", 400, "`tf` must be one of 1m, 5m, 15m, 1h, 4h, 1d."),
    ("symbol=ETH/USDT", 400, "`symbol` must be one of the bot's symbols (BTC/USDT)."),
    ("limit=9", 400, "`limit` must be a whole number from 10 to 1000 (digits only)."),
    ("limit=1001", 400, "`limit` must be a whole number from 10 to 1000 (digits only)."),
    ("limit=1e3", 400, "`limit` must be a whole number from 10 to 1000 (digits only)."),
]


def test_bad_parameters_unknown_bots_and_other_methods_are_refused_with_the_reason(
    db: None, logged_in: LoggedIn
) -> None:
    bot = _plain_bot()
    client, _ = logged_in("viewer")
    for query, status, error in BAD:
        response = client.get(f"/bots/{bot.pk}/chart/?{query}")
        assert (response.status_code, response.json()) == (status, {"error": error}), query
    for bot_id in ("999999", "99999999999999999999"):
        response = client.get(f"/bots/{bot_id}/chart/")
        assert response.status_code == 404 and response.json() == {"error": "No such bot."}
    response = client.get("/live/chart/?range=1y")
    assert response.status_code == 400 and response.json() == {"error": "`range` must be one of 6h, 24h, 7d, 30d."}
    assert client.post("/live/chart/").status_code == 405
    assert client.post(f"/bots/{bot.pk}/chart/").status_code == 405


# -- what it holds ---------------------------------------------------------------------------------------------------


def test_the_charts_hold_the_sandbox_candles_the_bots_fills_orders_levels_and_pnl(
    live: Live, traded: Bot, make_bot: Callable[..., Bot], logged_in: LoggedIn
) -> None:
    client, _ = logged_in("viewer")
    chart = data = client.get(f"/bots/{traded.pk}/chart/?tf=1m&limit=30").json()
    # The exchange's own candles, as a client outside botconsole reads them (a minute may have begun since).
    outside = {c[0] // 1000: c[1:5] for c in live.ccxt.fetch_ohlcv(SYMBOL, "1m", limit=30)}
    times = [c[0] for c in data["candles"]]
    assert len(times) == 30 and all(b - a == 60 for a, b in itertools.pairwise(times))
    same = [c for c in data["candles"] if c[0] in outside]
    assert len(same) >= 29 and all(outside[c[0]] == c[1:] for c in same)
    close = Decimal(str(data["candles"][-1][4]))
    assert close == Decimal(55000)  # the exchange's last trade: the bot's own buy
    assert (data["symbol"], data["timeframe"], data["timeframe_s"], data["unit"]) == (SYMBOL, "1m", 60, "USDT")

    fill = Fill.objects.select_related("order").get(order__bot=traded)
    [marker] = data["fills"]
    assert (marker["trade_id"], marker["side"], marker["price"]) == (fill.trade_id, "buy", 55000.0)
    assert marker["time"] == int(fill.timestamp.timestamp()) // 60 * 60
    orders = Order.objects.filter(bot=traded)
    assert sorted(o["id"] for o in data["orders"]) == sorted(o.pk for o in orders)
    still_open = orders.filter(status__in=Order.OPEN_STATUSES)
    assert {(o["id"], o["price"]) for o in data["open_orders"]} == {(o.pk, float(o.price or 0)) for o in still_open}
    assert 50000.0 in [o["price"] for o in data["open_orders"]]
    assert data["levels"] == [50000.0, 55000.0, 60000.0, 65000.0]

    # PnL: nothing before the fill's candle; at the last one what the ledger holds, marked at that candle's close.
    position = Position.objects.get(bot=traded, symbol=SYMBOL)
    assert position.average_entry is not None
    expected = position.realized_pnl + position.base_quantity * (close - position.average_entry)
    assert expected < 0  # bought at 55,000, and paid the fee
    assert [t for t, _ in data["pnl"]] == times
    assert data["pnl"][-1][1] == pytest.approx(float(expected), abs=1e-9)
    assert all(v == 0 for t, v in data["pnl"] if t < marker["time"])

    idle = make_bot(params={"lower": "20000", "upper": "30000", "levels": 3, "order_amount": "0.001"})
    # The dashboard's: the fleet (this bot and one that never traded) on one grid of candles.
    data = client.get("/live/chart/?range=6h").json()
    assert (data["range"], data["timeframe"], data["timeframe_s"], data["unit"]) == ("6h", "1m", 60, "USDT")
    times = data["times"]
    assert len(times) == 360 and all(b - a == 60 for a, b in itertools.pairwise(times))
    series = {b["id"]: b["points"] for b in data["bots"]}
    assert set(series) == {traded.pk, idle.pk}
    assert all(v == 0 for v in series[idle.pk])
    assert data["fleet"] == [a + b for a, b in zip(series[traded.pk], series[idle.pk], strict=True)]
    assert data["fleet"][-1] == pytest.approx(chart["pnl"][-1][1])  # both marked at the current candle's close


def test_a_symbol_the_exchange_cannot_price_is_a_note_not_an_error(sandbox_url: str, logged_in: LoggedIn) -> None:
    bot = _plain_bot()
    Bot.objects.filter(pk=bot.pk).update(symbols=["NOPE/USDT"])
    client, _ = logged_in("viewer")
    response = client.get(f"/bots/{bot.pk}/chart/")
    assert response.status_code == 200
    data = response.json()
    assert data["candles"] == [] and data["pnl"] == []
    [note] = data["notes"]
    assert note.startswith("The candles of NOPE/USDT could not be read from sandbox")


# -- the replay ------------------------------------------------------------------------------------------------------


def test_pnl_points_replay_the_fills_and_mark_each_candle_at_its_close() -> None:
    fills = [
        FillRow(10_000, "BTC/USDT", "buy", Decimal(100), Decimal(1), Decimal("0.1"), "USDT"),
        FillRow(130_000, "BTC/USDT", "sell", Decimal(110), Decimal("0.4"), Decimal("0.044"), "USDT"),
        FillRow(130_500, "ETH/USDT", "buy", Decimal(10), Decimal(1), Decimal(0), "USDT"),  # never priced: at its fill
    ]
    closes = {"BTC/USDT": {0: Decimal(100), 60_000: Decimal(105), 120_000: Decimal(108), 180_000: Decimal(90)}}
    points = pnl_points(fills, [0, 60_000, 120_000, 180_000], 60_000, closes)
    # Bought 1 at 100 + 0.1 fee: entry 100.1. Sold 0.4 at 110 less 0.044: realized 43.956 - 40.04 = 3.916.
    assert points == [Decimal("-0.1"), Decimal("4.9"), Decimal("8.656"), Decimal("-2.144")]


def test_the_replay_books_each_fill_as_the_ledger_stored_it(db: None) -> None:
    bot = _plain_bot()
    at = timezone.now() - timedelta(hours=1)
    # Buys and sells, fees in the base and in the quote currency, a position closed and opened again.
    trades = [
        ("buy", "60000", "0.01", "0.00001", "BTC"),
        ("buy", "58000", "0.02", "1.16", "USDT"),
        ("sell", "61000", "0.015", "0.915", "USDT"),
        ("sell", "59000", "0.01499", "0.00001", "BTC"),
        ("buy", "57000", "0.005", "0.285", "USDT"),
    ]
    for n, (side, price, amount, fee, fee_currency) in enumerate(trades):
        order = Order.objects.create(
            bot=bot,
            account=bot.account,
            symbol=SYMBOL,
            side=side,
            type=Order.Type.LIMIT,
            amount=Decimal(amount),
            price=Decimal(price),
            client_order_id=f"replay-{n}",
            intent_tag="t",
        )
        when = at + timedelta(minutes=n)
        fill_record(
            order=order,
            trade_id=f"r{n}",
            price=Decimal(price),
            amount=Decimal(amount),
            fee=Decimal(fee),
            fee_currency=fee_currency,
            timestamp=when,
        )
    book = Position(symbol=SYMBOL)
    for row in fill_rows([bot.pk])[bot.pk]:
        fill_replay(book, side=row.side, price=row.price, amount=row.amount, fee=row.fee, fee_currency=row.fee_currency)
    stored = Position.objects.get(bot=bot, symbol=SYMBOL)
    fields = ("base_quantity", "average_entry", "realized_pnl", "fees_quote", "unrealized_pnl")
    assert [getattr(book, f) for f in fields] == [getattr(stored, f) for f in fields]
    assert stored.realized_pnl != 0 and stored.base_quantity > 0
