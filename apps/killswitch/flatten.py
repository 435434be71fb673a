"""Flatten (opt-in per bot): once every order is cancelled and checked, market-sell flagged bots' positions.

Only live bots an admin flagged (Bot.flatten_on_kill) and only their own recorded long positions on their own
symbols: other holdings of the account are never touched. These orders do not go through the order gate (it
refuses everything while halted): they are the kill's own, decided beforehand by an admin, and recorded and
audited like any order. Plan (database) -> sell (the exchange, inside the kill's event loop) -> record (database).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from apps.audit.services import record
from apps.bots.models import Bot
from apps.exchanges import port
from apps.killswitch.models import KillRun
from apps.killswitch.report import ACTOR
from apps.trading.ids import client_order_id
from apps.trading.ledger import ledger_for, split_symbol
from apps.trading.models import Order, Position
from apps.trading.sync import order_apply_exchange, trade_record

FLATTEN_TAG = "kill-flatten"
RECENT_MS = 5000  # the sale's trades are looked for from a little before it was sent


@dataclass
class FlattenSale:
    """One market sell of a flagged bot's position; its Order row exists before it is sent."""

    order_id: int
    bot_id: int
    bot_name: str
    symbol: str
    amount: Decimal  # the bot's recorded position
    client_order_id: str
    sold: Decimal = Decimal(0)
    remote: port.RemoteOrder | None = None
    trades: list[port.RemoteTrade] = field(default_factory=list)
    error: str = ""


def flatten_plan(run: KillRun, bots: Iterable[Bot]) -> tuple[int, dict[str, list[FlattenSale]]]:
    """Create the Order rows of the sells the kill will send: (bots flagged, the sales by account id)."""
    by_account: dict[str, list[FlattenSale]] = {}
    flagged = [b for b in bots if b.mode == Bot.Mode.LIVE and b.flatten_on_kill]
    for bot in flagged:
        generation = ledger_for(bot).generation
        positions = Position.objects.filter(bot=bot, symbol__in=bot.symbols, base_quantity__gt=0).order_by("symbol")
        for position in positions:
            tag = f"{FLATTEN_TAG}-{run.pk}-{bot.symbols.index(position.symbol)}"
            order = Order.objects.create(
                bot=bot,
                account_id=bot.account_id,
                symbol=position.symbol,
                side=Order.Side.SELL,
                type=Order.Type.MARKET,
                amount=position.base_quantity,
                notional=position.base_quantity * (position.last_price or 0),
                client_order_id=client_order_id(bot.pk, tag, generation),
                intent_tag=tag,
                generation=generation,
            )
            by_account.setdefault(str(bot.account_id), []).append(
                FlattenSale(order.pk, bot.pk, bot.name, position.symbol, position.base_quantity, order.client_order_id)
            )
    return len(flagged), by_account


async def account_flatten(sales: list[FlattenSale], exchange: port.AsyncExchange) -> None:
    """Send one account's sells: never more than the account holds (fees, fills not yet seen)."""
    if not sales:
        return
    try:
        free = (await exchange.balances()).free
    except port.ExchangeError as exc:
        for sale in sales:
            sale.error = f"balance not read: {exc.message}"
        return
    for sale in sales:
        try:
            base, _ = split_symbol(sale.symbol)
            wanted = min(sale.amount, free.get(base, Decimal(0)))
            amount = await exchange.amount_to_precision(sale.symbol, wanted) if wanted > 0 else Decimal(0)
            if amount <= 0:
                sale.error = f"nothing to sell ({base} free: {free.get(base, Decimal(0))})"
                continue
            since = exchange.milliseconds() - RECENT_MS
            sale.remote = await exchange.market_sell(
                symbol=sale.symbol, amount=amount, client_order_id=sale.client_order_id
            )
            sale.sold = amount
            sale.trades = [
                t for t in await exchange.trades(sale.symbol, since_ms=since) if t.order_id == sale.remote.id
            ]
        except port.ExchangeError as exc:
            sale.error = exc.message


def flatten_record(sales: Iterable[FlattenSale]) -> tuple[str, list[str]]:
    """Store what the sells did (order state, fills and so positions), audit each; returns (detail, problems)."""
    sold: list[str] = []
    problems: list[str] = []
    for sale in sales:
        order = Order.objects.select_related("bot").get(pk=sale.order_id)
        if sale.remote is not None:
            Order.objects.filter(pk=order.pk).update(amount=sale.sold)
            order.amount = sale.sold
            order_apply_exchange(order, sale.remote)
            for trade in sale.trades:
                trade_record(order, trade)
            left = sale.amount - sale.sold
            sold.append(
                f"{sale.bot_name} sold {sale.sold.normalize():f} {sale.symbol} (average {order.average})"
                + (f", {left.normalize():f} left (below the lot size, or not in the account)" if left > 0 else "")
            )
        else:
            sale.error = sale.error or "not sent (no exchange client, or the exchange steps failed before)"
            Order.objects.filter(pk=order.pk).update(status=Order.Status.REJECTED, error=sale.error[:300])
            problems.append(f"flatten: {sale.bot_name} {sale.symbol}: {sale.error}"[:300])
        record(
            actor=ACTOR,
            action="killswitch.flatten_sold" if sale.remote is not None else "killswitch.flatten_failed",
            target=order,
            data={
                "bot": sale.bot_id,
                "symbol": sale.symbol,
                "position": sale.amount,
                "sold": sale.sold,
                "client_order_id": sale.client_order_id,
                "exchange_order_id": order.exchange_order_id,
                "average": order.average,
                "error": sale.error,
            },
        )
    return ("; ".join(sold) if sold else "no position sold"), problems
