"""Positions, fills and equity: the bookkeeping every order path shares (live and paper)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from apps.bots.models import Bot
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


# What a Position's amounts are stored with (numeric(28, 12)): PostgreSQL rounds half away from zero.
STORED = Decimal("1e-12")
_POSITION_AMOUNTS = ("base_quantity", "average_entry", "realized_pnl", "fees_quote", "unrealized_pnl", "last_price")


def fill_replay(
    position: Position, *, side: str, price: Decimal, amount: Decimal, fee: Decimal, fee_currency: str
) -> None:
    """Apply one stored fill to a position held in memory exactly as fill_record did, rounding as the database
    stored it after each fill (nothing is saved): the charts replay a bot's fills with it for its PnL over time."""
    _apply(position, side=side, price=price, amount=amount, fee=fee, fee_currency=fee_currency)
    for name in _POSITION_AMOUNTS:
        value = getattr(position, name)
        if value is not None:
            setattr(position, name, value.quantize(STORED, rounding=ROUND_HALF_UP))


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
    data: dict[str, Any] = field(default_factory=dict)  # the figures that tripped it, shown with the halt


def equity_update(*, ledger: BotLedger, equity: Decimal, now: dt.datetime | None = None) -> BotLedger:
    """Record the bot's own equity: the peak (drawdown is measured from it) and the day's start (daily loss)."""
    now = now or timezone.now()
    today = now.astimezone(dt.UTC).date()
    if ledger.day != today or ledger.day_start_equity is None:
        ledger.day, ledger.day_start_equity = today, equity
    ledger.peak_equity = equity if ledger.peak_equity is None else max(ledger.peak_equity, equity)
    ledger.last_equity, ledger.equity_at = equity, now
    ledger.save(update_fields=["day", "day_start_equity", "peak_equity", "last_equity", "equity_at", "updated_at"])
    return ledger


def quote_of(bot: Bot) -> str:
    """The unit of the bot's money figures: the quote currency of its first symbol."""
    return split_symbol(bot.symbols[0])[1] if bot.symbols else ""


def loss_breach(*, bot: Bot, ledger: BotLedger) -> Breach | None:
    """The daily-loss or drawdown breaker, if the bot's own last recorded equity trips one."""
    last = ledger.last_equity
    if last is None:
        return None
    unit = quote_of(bot)
    if ledger.day_start_equity is not None:
        loss = ledger.day_start_equity - last
        if loss > bot.daily_loss_limit:
            return Breach(
                "daily_loss_limit",
                f"Today's loss {loss:.2f} {unit} exceeds the daily loss limit {bot.daily_loss_limit:.2f} {unit} "
                f"(the bot's own equity {ledger.day_start_equity:.2f} at the start of the day, {last:.2f} now).",
                {
                    "loss": f"{loss:.2f}",
                    "limit": f"{bot.daily_loss_limit:.2f}",
                    "day_start_equity": f"{ledger.day_start_equity:.2f}",
                    "equity": f"{last:.2f}",
                    "unit": unit,
                },
            )
    peak = ledger.peak_equity
    if peak is not None and peak > 0:
        drawdown = (peak - last) / peak * 100
        if drawdown > bot.max_drawdown_pct:
            return Breach(
                "max_drawdown",
                f"The bot's own equity {last:.2f} {unit} is {drawdown:.2f}% below its peak {peak:.2f} {unit}, "
                f"beyond the {bot.max_drawdown_pct}% drawdown limit.",
                {
                    "drawdown_pct": f"{drawdown:.2f}",
                    "limit_pct": f"{bot.max_drawdown_pct}",
                    "peak_equity": f"{peak:.2f}",
                    "equity": f"{last:.2f}",
                    "unit": unit,
                },
            )
    return None


def paper_equity(*, bot: Bot, ledger: BotLedger, prices: dict[str, Decimal]) -> Decimal:
    equity = ledger.paper_quote if ledger.paper_quote is not None else bot.paper_balance
    for position in Position.objects.filter(bot=bot):
        price = prices.get(position.symbol, position.last_price or ZERO)
        equity += position.base_quantity * price
    return equity


def capital_basis(bot: Bot) -> Decimal:
    """What a live bot's own equity starts from: the most it may hold (its max position notional).

    A live bot shares its exchange account with others, so the account's balance is not its own.
    Its equity is this basis plus the realized and unrealized PnL of its own fills: what it made
    or lost, whoever else trades on the account. Paper bots start from their paper balance.
    """
    return bot.paper_balance if bot.mode == Bot.Mode.PAPER else bot.max_position_notional


def own_equity(*, bot: Bot) -> Decimal:
    """A live bot's own equity, from its positions as last marked (see capital_basis)."""
    totals = Position.objects.filter(bot=bot).aggregate(r=Sum("realized_pnl"), u=Sum("unrealized_pnl"))
    return capital_basis(bot) + (totals["r"] or ZERO) + (totals["u"] or ZERO)
