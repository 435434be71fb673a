"""Trade history pages (/trades/, /trades/orders/): who may read and export, filters, keyset pages,
totals, the CSV export and its audit entry, and bad input refused before anything is queried."""

from __future__ import annotations

import csv
import html
import io
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test import AsyncClient, Client
from django.test.utils import CaptureQueriesContext

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.core.display import money_text
from apps.exchanges.models import ExchangeAccount
from apps.trading import history
from apps.trading.models import Fill, Order, Position
from tests.people import Person, make_person, password_login

pytestmark = pytest.mark.django_db
LoggedIn = Callable[[str], tuple[Client, Person]]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TRADING_TABLES = ('"trading_fill"', '"trading_order"', '"trading_position"')


def _account() -> ExchangeAccount:
    return ExchangeAccount.objects.create(
        label="history",
        exchange_id="sandbox",
        key_fingerprint="abcd",
        key_digest="0" * 64,
        withdrawals=ExchangeAccount.Withdrawals.DISABLED,
    )


def _bot(account: ExchangeAccount, name: str, mode: str) -> Bot:
    return Bot.objects.create(
        name=name,
        account=account,
        strategy="grid",
        symbols=["BTC/USDT", "ETH/BTC"],
        params={"lower": "55000", "upper": "65000", "levels": 5, "order_amount": "0.001"},
        mode=mode,
        max_order_notional=Decimal("1000"),
        max_position_notional=Decimal("5000"),
        daily_loss_limit=Decimal("1000"),
        max_drawdown_pct=Decimal("50"),
    )


_seq = iter(range(1, 10**6))


def _order(bot: Bot, *, symbol: str, side: str, status: str, at: datetime, price: str, amount: str) -> Order:
    n = next(_seq)
    return Order.objects.create(
        bot=bot,
        account=bot.account,
        symbol=symbol,
        side=side,
        type=Order.Type.LIMIT,
        amount=Decimal(amount),
        price=Decimal(price),
        notional=Decimal(price) * Decimal(amount),
        client_order_id=f"hist-{n}",
        exchange_order_id=f"x-{n}",
        status=status,
        filled=Decimal(amount) if status == Order.Status.FILLED else Decimal(0),
        average=Decimal(price) if status == Order.Status.FILLED else None,
        intent_tag="t",
        paper=bot.mode == Bot.Mode.PAPER,
        created_at=at,
    )


def _fill(order: Order, *, at: datetime, fee: str, fee_currency: str, trade_id: str = "") -> Fill:
    return Fill.objects.create(
        order=order,
        account=order.account,
        trade_id=trade_id or f"t-{next(_seq)}",
        price=order.price or Decimal(1),
        amount=order.amount,
        fee=Decimal(fee),
        fee_currency=fee_currency,
        timestamp=at,
    )


@dataclass
class Book:
    alpha: Bot  # live
    beta: Bot  # paper
    orders: list[Order]
    fills: list[Fill]


@pytest.fixture
def book() -> Book:
    """Two bots (one live, one paper), two symbols (two quote currencies), both sides, several statuses:
    an order a minute from T0, a fill 30 s after each filled order (two fills share a timestamp)."""
    account = _account()
    alpha, beta = _bot(account, "alpha", Bot.Mode.LIVE), _bot(account, "beta", Bot.Mode.PAPER)
    statuses = [Order.Status.FILLED, Order.Status.FILLED, Order.Status.CANCELED, Order.Status.OPEN]
    orders, fills = [], []
    for i in range(24):
        bot = beta if i % 3 == 0 else alpha
        btc = i % 2 == 0
        order = _order(
            bot,
            symbol="BTC/USDT" if btc else "ETH/BTC",
            side=Order.Side.BUY if i % 4 < 2 else Order.Side.SELL,
            status=statuses[i % 4] if i % 5 else Order.Status.FILLED,
            at=T0 + timedelta(minutes=i),
            price="60000.5" if btc else "0.05",
            amount="0.002" if btc else "1.5",
        )
        orders.append(order)
        if order.status == Order.Status.FILLED:
            at = T0 + timedelta(minutes=i, seconds=30) if i != 10 else T0 + timedelta(minutes=9, seconds=30)
            fills.append(_fill(order, at=at, fee="0.12" if btc else "0.0003", fee_currency="USDT" if btc else "BNB"))
    Position.objects.create(bot=alpha, symbol="BTC/USDT", realized_pnl=Decimal("12.5"))
    Position.objects.create(bot=alpha, symbol="ETH/BTC", realized_pnl=Decimal("0.01"))
    Position.objects.create(bot=beta, symbol="BTC/USDT", realized_pnl=Decimal("-3"))
    return Book(alpha, beta, orders, fills)


def _ids(page: str, kind: str) -> list[int]:
    return [int(x) for x in re.findall(rf'data-{kind}="(\d+)"', page)]


def _newest_first(rows: list[Any], time: str) -> list[int]:
    return [r.pk for r in sorted(rows, key=lambda r: (getattr(r, time), r.pk), reverse=True)]


def _link(page: str, rel: str) -> str | None:
    found = re.search(rf'href="(\?[^"]*)" rel="{rel}"', page)
    return html.unescape(found[1]) if found else None


def _csv(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200 and response.streaming, response.status_code
    assert response["Content-Type"] == "text/csv; charset=utf-8" and "attachment" in response["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


# -- who may read ------------------------------------------------------------------------------------

URLS = ["/trades/", "/trades/orders/", "/trades/export.csv", "/trades/orders/export.csv"]


def test_anonymous_and_password_only_sessions_are_sent_to_log_in(client: Client) -> None:
    for url in URLS:
        assert client.get(url)["Location"].startswith("/accounts/login/"), url
    half = Client()
    password_login(half, make_person("pat", "admin"))
    for url in URLS:
        assert half.get(url)["Location"] == "/accounts/otp/", url
    assert not AuditEntry.objects.filter(action="trades.exported").exists()


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_every_role_reads_and_exports_the_history(logged_in: LoggedIn, book: Book, role: str) -> None:
    client, who = logged_in(role)
    page = client.get("/trades/")
    assert page.status_code == 200
    text = page.content.decode()
    assert '<a href="/trades/" aria-current="page">Trades</a>' in text  # in the main navigation
    assert _ids(text, "fill") == _newest_first(book.fills, "timestamp")
    orders = client.get("/trades/orders/")
    assert orders.status_code == 200
    assert _ids(orders.content.decode(), "order") == _newest_first(book.orders, "created_at")
    rows = _csv(client.get("/trades/export.csv"))
    assert len(rows) == len(book.fills)
    entry = AuditEntry.objects.get(action="trades.exported")
    assert entry.actor == who.user.username and entry.otp_verified


def test_the_bot_page_links_to_its_trades(logged_in: LoggedIn, book: Book) -> None:
    client, _ = logged_in("viewer")
    page = client.get(f"/bots/{book.beta.pk}/").content.decode()
    assert f'href="/trades/?bot={book.beta.pk}"' in page
    mine = client.get(f"/trades/?bot={book.beta.pk}").content.decode()
    want = _newest_first([f for f in book.fills if f.order.bot_id == book.beta.pk], "timestamp")
    assert want and _ids(mine, "fill") == want


# -- filters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("bot={alpha}", lambda o, b: o.bot_id == b.alpha.pk),
        ("symbol=ETH/BTC", lambda o, b: o.symbol == "ETH/BTC"),
        ("side=sell", lambda o, b: o.side == "sell"),
        ("mode=paper", lambda o, b: o.paper),
        ("mode=live", lambda o, b: not o.paper),
        (
            "bot={alpha}&symbol=BTC/USDT&side=buy",
            lambda o, b: (o.bot_id, o.symbol, o.side) == (b.alpha.pk, "BTC/USDT", "buy"),
        ),
    ],
)
def test_fill_and_order_filters(
    logged_in: LoggedIn, book: Book, query: str, expected: Callable[[Order, Book], bool]
) -> None:
    client, _ = logged_in("viewer")
    query = query.format(alpha=book.alpha.pk)
    fills = client.get(f"/trades/?{query}")
    assert fills.status_code == 200
    want = _newest_first([f for f in book.fills if expected(f.order, book)], "timestamp")
    assert want, "the case must match something"
    assert _ids(fills.content.decode(), "fill") == want
    orders = client.get(f"/trades/orders/?{query}")
    want = _newest_first([o for o in book.orders if expected(o, book)], "created_at")
    assert want and _ids(orders.content.decode(), "order") == want


def test_time_and_status_filters(logged_in: LoggedIn, book: Book) -> None:
    client, _ = logged_in("viewer")
    since, until = T0 + timedelta(minutes=9, seconds=30), T0 + timedelta(minutes=16)
    page = client.get("/trades/?since=2026-03-01T12:09:30&until=2026-03-01T12:16")
    want = _newest_first([f for f in book.fills if since <= f.timestamp < until], "timestamp")
    assert len(want) >= 3 and _ids(page.content.decode(), "fill") == want  # the two fills of 12:09:30 included

    page = client.get("/trades/orders/?status=canceled&until=2026-03-01T12:16")
    want = _newest_first([o for o in book.orders if o.status == "canceled" and o.created_at < until], "created_at")
    assert want and _ids(page.content.decode(), "order") == want


# -- pages -------------------------------------------------------------------------------------------


def test_pages_go_by_time_and_id_without_gaps_or_duplicates(logged_in: LoggedIn) -> None:
    account = _account()
    bot, other = _bot(account, "pager", Bot.Mode.LIVE), _bot(account, "other", Bot.Mode.LIVE)
    order = _order(bot, symbol="BTC/USDT", side="buy", status=Order.Status.FILLED, at=T0, price="100", amount="1")
    noise = _order(other, symbol="BTC/USDT", side="buy", status=Order.Status.FILLED, at=T0, price="100", amount="1")
    fills = []
    for i in range(130):
        # Times out of insertion order, three fills on each second: the id breaks the ties.
        at = T0 + timedelta(seconds=((i * 37) % 130) // 3)
        fills.append(_fill(order, at=at, fee="0", fee_currency="USDT"))
        _fill(noise, at=at, fee="0", fee_currency="USDT")
    want = _newest_first(fills, "timestamp")
    client, _ = logged_in("viewer")

    seen: list[int] = []
    pages: list[list[int]] = []
    link: str | None = f"?bot={bot.pk}"
    while link is not None:
        text = client.get(f"/trades/{link}").content.decode()
        pages.append(_ids(text, "fill"))
        seen += pages[-1]
        link = _link(text, "next")
        assert len(pages) < 10
    assert [len(p) for p in pages] == [50, 50, 30]
    assert seen == want  # every fill once, in order

    # And back from the oldest page through the "newer" links.
    text = client.get(f"/trades/?bot={bot.pk}").content.decode()
    while (older := _link(text, "next")) is not None:
        assert "bot=" in older  # the filters travel with the links
        text = client.get(f"/trades/{older}").content.decode()
    back = _ids(text, "fill")
    while (newer := _link(text, "prev")) is not None:
        text = client.get(f"/trades/{newer}").content.decode()
        back = _ids(text, "fill") + back
    assert back == want


def test_a_page_is_a_keyset_query_without_offset(logged_in: LoggedIn, book: Book) -> None:
    client, _ = logged_in("viewer")
    cursor = history.Cursor(book.fills[5].timestamp, book.fills[5].pk)
    with CaptureQueriesContext(connection) as queries:
        page = client.get(f"/trades/?before={cursor}")
    assert page.status_code == 200
    want = _newest_first(book.fills, "timestamp")
    assert _ids(page.content.decode(), "fill") == want[want.index(book.fills[5].pk) + 1 :]
    listing = [
        q["sql"] for q in queries.captured_queries if 'FROM "trading_fill"' in q["sql"] and "LIMIT 51" in q["sql"]
    ]
    assert len(listing) == 1 and "OFFSET" not in listing[0] and '"trading_fill"."timestamp" <' in listing[0]
    assert not any("OFFSET" in q["sql"] for q in queries.captured_queries)


# -- totals ------------------------------------------------------------------------------------------


def _money(amounts: dict[str, Decimal]) -> list[tuple[str, Decimal]]:
    return sorted(amounts.items())


def test_totals_cover_every_matching_fill_with_their_currencies(logged_in: LoggedIn, book: Book) -> None:
    client, _ = logged_in("viewer")
    mine = [f for f in book.fills if f.order.bot_id == book.alpha.pk]
    volume: dict[str, Decimal] = defaultdict(Decimal)
    fees: dict[str, Decimal] = defaultdict(Decimal)
    for f in mine:
        volume["USDT" if f.order.symbol == "BTC/USDT" else "BTC"] += f.price * f.amount
        fees[f.fee_currency] += f.fee
    totals = history.fill_totals(history.TradeFilters(bot_id=book.alpha.pk))
    assert totals.fills == len(mine)
    assert totals.volume == _money(volume) and totals.fees == _money(fees)
    assert totals.realized == [("BTC", Decimal("0.01")), ("USDT", Decimal("12.5"))]
    assert "all time, of this bot's positions" in totals.realized_covers

    page = client.get(f"/trades/?bot={book.alpha.pk}").content.decode()
    for unit, amount in [*volume.items(), *fees.items()]:
        assert money_text(amount, unit) in page
    realized = re.search(r'<dd id="total-realized">(.*?)</dd>', page)
    assert realized and realized[1] == (
        '<span class="pnl gain">+0.01 BTC <span class="pnl-word">(gain)</span></span>, '
        '<span class="pnl gain">+12.50 USDT <span class="pnl-word">(gain)</span></span>'
    )
    # Every bot: beta's loss is in the realized PnL of the fleet.
    fleet = history.fill_totals(history.TradeFilters())
    assert fleet.realized == [("BTC", Decimal("0.01")), ("USDT", Decimal("9.5"))]
    assert fleet.fills == len(book.fills)


def test_realized_pnl_is_not_shown_where_a_filter_would_make_it_wrong(logged_in: LoggedIn, book: Book) -> None:
    client, _ = logged_in("viewer")
    page = client.get(f"/trades/?bot={book.alpha.pk}&side=buy").content.decode()
    assert "Realized PnL is not shown with a side, mode or time filter" in page
    assert history.fill_totals(history.TradeFilters(since=T0)).realized is None


def test_order_totals_count_statuses_and_placed_notional(logged_in: LoggedIn, book: Book) -> None:
    client, _ = logged_in("viewer")
    sells = [o for o in book.orders if o.side == "sell"]
    totals = history.order_totals(history.TradeFilters(side="sell"))
    assert totals.orders == len(sells)
    placed: dict[str, Decimal] = defaultdict(Decimal)
    for o in sells:
        placed["USDT" if o.symbol == "BTC/USDT" else "BTC"] += o.notional
    assert totals.placed == _money(placed)
    counted = dict(totals.by_status)
    assert counted["Filled"] == sum(o.status == "filled" for o in sells) and sum(counted.values()) == len(sells)
    page = client.get("/trades/orders/?side=sell").content.decode()
    assert money_text(placed["USDT"], "USDT") in page


# -- export ------------------------------------------------------------------------------------------


def test_the_fill_export_holds_exactly_the_matching_fills_and_is_audited(logged_in: LoggedIn, book: Book) -> None:
    client, who = logged_in("viewer")
    rows = _csv(client.get(f"/trades/export.csv?bot={book.alpha.pk}&side=buy&since=2026-03-01T12:00"))
    want = [f for f in book.fills if f.order.bot_id == book.alpha.pk and f.order.side == "buy"]
    want_ids = list(reversed(_newest_first(want, "timestamp")))  # oldest first
    assert want and [int(r["fill_id"]) for r in rows] == want_ids
    first = next(f for f in want if f.pk == want_ids[0])
    row = rows[0]
    assert row["bot"] == "alpha" and row["mode"] == "live" and row["side"] == "buy"
    assert Decimal(row["price"]) == first.price and Decimal(row["amount"]) == first.amount
    assert Decimal(row["quote_volume"]) == first.price * first.amount and row["quote"] in ("USDT", "BTC")
    assert Decimal(row["fee"]) == first.fee and row["fee_currency"] == first.fee_currency
    assert row["time"] == first.timestamp.isoformat()

    entry = AuditEntry.objects.get(action="trades.exported")
    assert entry.actor == who.user.username and entry.otp_verified
    assert entry.data["kind"] == "fills" and entry.data["format"] == "csv"
    assert entry.data["filters"] == {"bot": book.alpha.pk, "side": "buy", "since": "2026-03-01T12:00:00+00:00"}
    assert entry.data["upto_id"] == max(f.pk for f in book.fills)


def test_the_order_export_holds_exactly_the_matching_orders(logged_in: LoggedIn, book: Book) -> None:
    client, _ = logged_in("operator")
    rows = _csv(client.get("/trades/orders/export.csv?status=canceled&mode=live"))
    want = [o for o in book.orders if o.status == "canceled" and not o.paper]
    assert want and [int(r["order_id"]) for r in rows] == list(reversed(_newest_first(want, "created_at")))
    assert {r["status"] for r in rows} == {"canceled"} and {r["mode"] for r in rows} == {"live"}
    entry = AuditEntry.objects.get(action="trades.exported")
    assert entry.data["kind"] == "orders" and entry.data["filters"] == {"status": "canceled", "mode": "live"}


def test_the_export_spans_many_batches_in_order(book: Book) -> None:
    batches = list(history.fill_export_batches(history.TradeFilters(), upto=10**9, batch=4))
    assert len(batches) > 2 and all(len(b) <= 4 for b in batches)
    flat = [f.pk for b in batches for f in b]
    assert flat == list(reversed(_newest_first(book.fills, "timestamp")))
    # Rows added after the export began (above `upto`) are not in it.
    upto = max(f.pk for f in book.fills[:-3])
    assert {f.pk for b in history.fill_export_batches(history.TradeFilters(), upto=upto) for f in b} == {
        f.pk for f in book.fills if f.pk <= upto
    }


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralized(logged_in: LoggedIn) -> None:
    client, _ = logged_in("viewer")
    bot = _bot(_account(), "=cmd|' /C calc'!A0", Bot.Mode.LIVE)
    order = _order(bot, symbol="BTC/USDT", side="buy", status=Order.Status.FILLED, at=T0, price="1", amount="1")
    _fill(order, at=T0, fee="0", fee_currency="@SUM(1)", trade_id='=HYPERLINK("http://x")')
    rows = _csv(client.get("/trades/export.csv"))
    assert [(r["bot"], r["trade_id"], r["fee_currency"]) for r in rows] == [
        ("'=cmd|' /C calc'!A0", '\'=HYPERLINK("http://x")', "'@SUM(1)")
    ]


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "message"),
    [
        ("/trades/", "bot=abc", "Select a valid choice. abc is not one of the available choices."),
        ("/trades/", "bot=99999999999999999999999", "Select a valid choice."),
        ("/trades/", "bot=-1", "Select a valid choice."),
        ("/trades/", "side=short", "Select a valid choice."),
        ("/trades/", "mode=demo", "Select a valid choice."),
        ("/trades/orders/", "status=done", "Select a valid choice."),
        ("/trades/", "symbol=BTC%3BDROP", "A symbol has letters, digits and . _ : / - only"),
        ("/trades/", "symbol=BTC%00", "Remove the control character(s) (U+0000)"),
        ("/trades/", "symbol=" + "X" * 31, "Ensure this value has at most 30 characters"),
        ("/trades/", "since=yesterday", "Enter a valid date/time."),
        ("/trades/orders/", "since=2026-03-02T00:00&until=2026-03-01T00:00", "Must be later than From."),
        ("/trades/", "since=1999-12-31", "Give a time between 2000-01-01"),
        ("/trades/", "until=9999-12-31", "Give a time between 2000-01-01"),
        ("/trades/", "before=abc", "This page position is not one the page&#x27;s links make"),
        ("/trades/", "before=1_99999999999999999999", "This page position is not one"),
        ("/trades/orders/", "after=99999999999999999_1", "This page position is not one"),
        ("/trades/", "before=1_2&after=1_3", "Give one position only"),
    ],
)
def test_bad_input_is_refused_with_a_message_and_nothing_is_queried(
    logged_in: LoggedIn, book: Book, path: str, query: str, message: str
) -> None:
    client, _ = logged_in("viewer")
    for url in (f"{path}?{query}", f"{path}export.csv?{query}"):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 400, url
        text = response.content.decode()
        assert message in text, (url, text[:3000])
        assert not _ids(text, "fill") and not _ids(text, "order")
        touched = [q["sql"] for q in queries.captured_queries if any(t in q["sql"] for t in TRADING_TABLES)]
        assert touched == [], url
    assert not AuditEntry.objects.filter(action="trades.exported").exists()


def test_an_unknown_bot_id_that_fits_is_refused_too(logged_in: LoggedIn, book: Book) -> None:
    client, _ = logged_in("viewer")
    response = client.get(f"/trades/?bot={book.beta.pk + 1000}")
    assert response.status_code == 400 and "Select a valid choice." in response.content.decode()


def test_a_cursor_past_the_end_offers_the_way_back(logged_in: LoggedIn, book: Book) -> None:
    client, _ = logged_in("viewer")
    oldest = min(book.fills, key=lambda f: (f.timestamp, f.pk))
    page = client.get(f"/trades/?before={history.Cursor(oldest.timestamp, oldest.pk)}").content.decode()
    assert _ids(page, "fill") == [] and "No fills match these filters on this page" in page
    newer = _link(page, "prev")
    assert newer is not None
    assert _ids(client.get(f"/trades/{newer}").content.decode(), "fill")[-1] == oldest.pk


def test_an_export_streams_under_asgi_too(logged_in: LoggedIn, book: Book) -> None:
    client, _ = logged_in("viewer")
    async_client = AsyncClient()
    async_client.cookies = client.cookies

    async def fetch() -> tuple[bool, bytes]:
        response: Any = await async_client.get(f"/trades/export.csv?bot={book.beta.pk}")
        assert response.status_code == 200
        return response.is_async, b"".join([chunk async for chunk in response.streaming_content])

    is_async, body = async_to_sync(fetch)()
    assert is_async  # an async iterator: Django streams it instead of reading it all first
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    want = [f for f in book.fills if f.order.bot_id == book.beta.pk]
    assert [int(r["fill_id"]) for r in rows] == list(reversed(_newest_first(want, "timestamp")))
