"""Positions, fills and equity: the bookkeeping every order path shares (live and paper)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from apps.bots.models import Bot
from apps.exchanges import port
from apps.trading import events
from apps.trading.models import ZERO, BotLedger, Fill, Order, Position


def split_symbol(symbol: str) -> tuple[str, str]:
    """("BTC", "USDT") from a unified ccxt symbol such as "BTC/USDT" (or "BTC/USDT:USDT")."""
    base, _, rest = symbol.partition("/")
    return base, rest.split(":", 1)[0]


def ledger_for(bot: Bot) -> BotLedger:
    ledger, _ = BotLedger.objects.get_or_create(bot=bot, defaults={"paper_quote": bot.paper_balance})
    return ledger


def position_for(bot: Bot, symbol: str) -> Position:
    position, _ = Position.objects.get_or_create(bot=bot, symbol=symbol)
    return position


def _apply(position: Position, *, side: str, price: Decimal, amount: Decimal, fee: Decimal, fee_currency: str) -> None:
    base_asset, quote_asset = split_symbol(position.symbol)
    fee_in_base = fee if fee_currency == base_asset else ZERO
    fee_in_quote = fee if fee_currency == quote_asset else ZERO
    position.fees_quote += fee_in_quote + fee_in_base * price
    held, entry = position.base_quantity, position.average_entry
    if side == Order.Side.BUY:
        received = amount - fee_in_base
        cost = price * amount + fee_in_quote
        total = held + received
        # Fees paid in base raise the average entry: the same cost bought fewer coins.
        position.average_entry = ((entry or ZERO) * max(held, ZERO) + cost) / total if total > 0 else None
        position.base_quantity = total
    else:
        proceeds = price * amount - fee_in_quote
        position.realized_pnl += proceeds - (entry if entry is not None else price) * amount
        position.base_quantity = held - amount - fee_in_base
        if position.base_quantity <= 0:
            position.average_entry = None
    mark(position, price)


def mark(position: Position, price: Decimal) -> None:
    position.last_price = price
    entry = position.average_entry
    position.unrealized_pnl = (price - entry) * position.base_quantity if entry is not None else ZERO


def fill_record(
    *,
    order: Order,
    trade_id: str,
    price: Decimal,
    amount: Decimal,
    fee: Decimal,
    fee_currency: str,
    timestamp: dt.datetime,
) -> Fill | None:
    """Store a fill once (unique per account and trade id) and apply it to the position.

    Returns None when the fill was already stored: polling the same trades twice changes nothing.
    """
    with transaction.atomic():
        fill, created = Fill.objects.get_or_create(
            account_id=order.account_id,
            trade_id=trade_id,
            defaults={
                "order": order,
                "price": price,
                "amount": amount,
                "fee": fee,
                "fee_currency": fee_currency,
                "timestamp": timestamp,
            },
        )
        if not created:
            return None
        position_for(order.bot, order.symbol)  # make sure the row exists before locking it
        position = Position.objects.select_for_update().get(bot_id=order.bot_id, symbol=order.symbol)
        _apply(position, side=order.side, price=price, amount=amount, fee=fee, fee_currency=fee_currency)
        position.save()
        if order.paper:
            ledger = BotLedger.objects.select_for_update().get(bot_id=order.bot_id)
            _, quote_asset = split_symbol(order.symbol)
            fee_in_quote = fee if fee_currency == quote_asset else ZERO
            delta = -price * amount if order.side == Order.Side.BUY else price * amount - fee_in_quote
            ledger.paper_quote = (ledger.paper_quote or ZERO) + delta
            ledger.save(update_fields=["paper_quote", "updated_at"])
        events.fill(fill, position)
        return fill


@dataclass(frozen=True)
class Breach:
    reason: str  # a GateRefusal.Reason value
    message: str


def equity_update(*, ledger: BotLedger, equity: Decimal, now: dt.datetime | None = None) -> BotLedger:
    """Record the bot's equity: the peak (drawdown is measured from it) and the day's start (daily loss)."""
    now = now or timezone.now()
    today = now.astimezone(dt.UTC).date()
    if ledger.day != today or ledger.day_start_equity is None:
        ledger.day, ledger.day_start_equity = today, equity
    ledger.peak_equity = equity if ledger.peak_equity is None else max(ledger.peak_equity, equity)
    ledger.last_equity, ledger.equity_at = equity, now
    ledger.save(update_fields=["day", "day_start_equity", "peak_equity", "last_equity", "equity_at", "updated_at"])
    return ledger


def loss_breach(*, bot: Bot, ledger: BotLedger) -> Breach | None:
    """The daily-loss or drawdown breaker, if the last recorded equity trips one."""
    last = ledger.last_equity
    if last is None:
        return None
    if ledger.day_start_equity is not None:
        loss = ledger.day_start_equity - last
        if loss > bot.daily_loss_limit:
            return Breach(
                "daily_loss_limit",
                f"Today's loss {loss:.2f} exceeds the daily loss limit {bot.daily_loss_limit:.2f} "
                f"(equity {ledger.day_start_equity:.2f} at the start of the day, {last:.2f} now).",
            )
    peak = ledger.peak_equity
    if peak is not None and peak > 0:
        drawdown = (peak - last) / peak * 100
        if drawdown > bot.max_drawdown_pct:
            return Breach(
                "max_drawdown",
                f"Equity {last:.2f} is {drawdown:.2f}% below its peak {peak:.2f}, beyond the "
                f"{bot.max_drawdown_pct}% drawdown limit.",
            )
    return None


def paper_equity(*, bot: Bot, ledger: BotLedger, prices: dict[str, Decimal]) -> Decimal:
    equity = ledger.paper_quote if ledger.paper_quote is not None else bot.paper_balance
    for position in Position.objects.filter(bot=bot):
        price = prices.get(position.symbol, position.last_price or ZERO)
        equity += position.base_quantity * price
    return equity


def account_equity(*, bot: Bot, balance: port.Balances, prices: dict[str, Decimal]) -> Decimal:
    """Live equity from the exchange's balances: the quote currency plus each traded base asset at its price.

    Valued in the quote currency of the bot's first symbol; symbols quoted in another currency
    are left out rather than added in the wrong unit. It is the account's equity: bots sharing
    an account share their breakers, which errs on the side of stopping.
    """
    if not bot.symbols:
        return ZERO
    _, quote = split_symbol(bot.symbols[0])
    equity = balance.total.get(quote, ZERO)
    for symbol in bot.symbols:
        base, symbol_quote = split_symbol(symbol)
        if symbol_quote == quote and symbol in prices:
            equity += balance.total.get(base, ZERO) * prices[symbol]
    return equity
