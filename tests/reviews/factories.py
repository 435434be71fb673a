"""Rows for reviews made directly, where the path that makes them is not what a test is about."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.trading.ledger import fill_record, ledger_for
from apps.trading.models import Fill, Order
from tests.trading.conftest import SYMBOL

DAY1 = dt.datetime(2026, 2, 10, 9, 0, tzinfo=dt.UTC)
_ids = itertools.count(1)


def account(label: str = "review-acct") -> ExchangeAccount:
    """An account row without a key: for reviews built from rows made directly (no exchange involved)."""
    return ExchangeAccount.objects.create(
        label=label,
        exchange_id="sandbox",
        key_fingerprint="abcd",
        key_digest=f"{next(_ids):064d}",
        withdrawals=ExchangeAccount.Withdrawals.DISABLED,
    )


def bot_on(acct: ExchangeAccount, name: str, mode: str = Bot.Mode.LIVE) -> Bot:
    bot = Bot.objects.create(
        name=name,
        account=acct,
        strategy="grid",
        symbols=[SYMBOL],
        mode=mode,
        max_order_notional=Decimal(10**6),
        max_position_notional=Decimal(10**6),
        daily_loss_limit=Decimal(10**6),
        max_drawdown_pct=Decimal(90),
        params={"lower": "50", "upper": "500", "levels": 5, "order_amount": "1"},
    )
    ledger_for(bot)
    return bot


def fill(
    bot: Bot, side: str, amount: str, price: str, at: dt.datetime, fee: str = "0", fee_currency: str = "USDT"
) -> Fill:
    """An order and its fill, booked through the ledger like a synced fill (the path is irrelevant here)."""
    n = next(_ids)
    order = Order.objects.create(
        bot=bot,
        account=bot.account,
        symbol=SYMBOL,
        side=side,
        type="limit",
        amount=Decimal(amount),
        price=Decimal(price),
        client_order_id=f"review-test-{n}",
        intent_tag=f"t{n}",
        paper=bot.mode == Bot.Mode.PAPER,
        status=Order.Status.FILLED,
        filled=Decimal(amount),
        created_at=at,
    )
    stored_fill = fill_record(
        order=order,
        trade_id=f"trade-{n}",
        price=Decimal(price),
        amount=Decimal(amount),
        fee=Decimal(fee),
        fee_currency=fee_currency,
        timestamp=at,
    )
    assert stored_fill is not None
    return stored_fill
