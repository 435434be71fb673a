"""The order gate: the one place an order can reach an exchange from.

Every order, live or paper, goes through `place_order`, which runs `gate_check` and only then
calls the exchange. The checks read the database at the moment of ordering (never a cached
flag), and `place_order` holds share locks on the global halt row and the bot's row while it
checks and sends: an operator's halt waits for an order in flight, and no order starts after it.
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from apps.audit.services import record
from apps.bots.halts import actor_of, bot_halt, global_halt_active, global_halt_lock_shared
from apps.bots.models import Bot
from apps.core.exceptions import ApplicationError
from apps.exchanges import port
from apps.strategies.base import OrderIntent
from apps.trading import events
from apps.trading.ids import client_order_id
from apps.trading.ledger import Breach, ledger_for, loss_breach
from apps.trading.marketdata import market_price
from apps.trading.models import ZERO, BotLedger, GateRefusal, Order, Position
from apps.trading.paper import paper_place
from apps.trading.sync import order_apply_exchange, order_unrecorded

logger = logging.getLogger(__name__)
Reason = GateRefusal.Reason
RATE_WINDOW = dt.timedelta(seconds=60)
ANOMALY_SAMPLE = 50  # the bot's last orders the size-anomaly median is taken over
ANOMALY_MIN_ORDERS = 5  # below this there is no "usual size" to compare with


@dataclass(frozen=True)
class GateDecision:
    allowed: bool
    reason: str = ""
    message: str = ""
    notional: Decimal | None = None
    refusal: GateRefusal | None = None


class OrderRefused(ApplicationError):
    """The gate refused the order; `decision` says why. Nothing was sent to the exchange."""

    def __init__(self, decision: GateDecision) -> None:
        super().__init__(decision.message)
        self.decision = decision


def _bot_halt_lock_shared(bot: Bot) -> tuple[bool, str, bool]:
    """Inside a transaction: (halted, halt reason, told to stop) of the bot, its row share-locked until commit."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT halted, halt_reason, desired_state FROM {Bot._meta.db_table} WHERE id = %s FOR SHARE",  # noqa: S608  # nosec B608
            [bot.pk],
        )
        row = cursor.fetchone()
    if row is None:
        return True, "The bot no longer exists.", True
    return bool(row[0]), str(row[1]), row[2] == Bot.Desired.STOPPED


def intent_invalid(intent: OrderIntent, price: Decimal | None) -> str | None:
    """What makes the intent unplaceable at all (no side, no amount, no price to value it at), or None."""
    if intent.side not in Order.Side.values:
        return f"Unknown side {intent.side!r}."
    if intent.type not in Order.Type.values:
        return f"Unknown order type {intent.type!r}."
    if not intent.amount.is_finite() or intent.amount <= 0:
        return "The amount must be a positive number."
    if intent.type == Order.Type.LIMIT and (intent.price is None or not intent.price.is_finite() or intent.price <= 0):
        return "A limit order needs a positive price."
    if price is None or not price.is_finite() or price <= 0:
        return "No reference price to value the order at."
    return None


# The limit rules, as pure functions of what the database said: the bot form's preview of a first tick asks them
# too, with what that tick would have placed before.


def order_notional_breach(*, notional: Decimal, limit: Decimal) -> Breach | None:
    if notional > limit:
        return Breach(Reason.ORDER_NOTIONAL, f"Order notional {notional:.2f} exceeds the limit {limit:.2f}.")
    return None


def position_breach(
    *, intent: OrderIntent, price: Decimal, held: Decimal, pending: Decimal, limit: Decimal
) -> Breach | None:
    """`held`: the bot's base position; `pending`: the amount of its resting orders on the intent's side."""
    sign = 1 if intent.side == Order.Side.BUY else -1
    after = held + sign * (pending + intent.amount)
    if abs(after) > abs(held) and abs(after) * price > limit:
        return Breach(
            Reason.POSITION_NOTIONAL,
            f"The position would reach {abs(after) * price:.2f} (with resting orders), beyond the limit {limit:.2f}.",
        )
    return None


def open_orders_breach(*, open_count: int, limit: int) -> Breach | None:
    if open_count >= limit:
        return Breach(Reason.OPEN_ORDERS, f"The bot already has {limit} open orders, its limit.")
    return None


def rate_breach(*, recent: int, limit: int) -> Breach | None:
    if recent >= limit:
        return Breach(Reason.RATE, f"{recent} orders in the last minute; the limit is {limit}.")
    return None


def _checks(bot: Bot, intent: OrderIntent, price: Decimal, halts: tuple[bool, str, bool, str, bool]) -> Breach | None:
    """The first rule the order breaks, or None. Order matters: halts first, then the breakers."""
    global_active, global_reason, bot_halted, bot_reason, told_to_stop = halts
    if global_active:
        return Breach(Reason.GLOBAL_HALT, f"Trading is halted everywhere: {global_reason or 'kill switch'}.")
    if bot_halted:
        return Breach(Reason.BOT_HALTED, f"The bot is halted: {bot_reason or 'no reason given'}.")
    if told_to_stop:
        # A worker still finishing its tick after a stop or a kill must not order, even if the global
        # halt is lifted meanwhile: only a new start (desired state running) lets the bot trade again.
        return Breach(Reason.BOT_STOPPED, "The bot was told to stop; its worker may place no more orders.")
    if intent.symbol not in bot.symbols:
        return Breach(Reason.SYMBOL, f"{intent.symbol} is not one of the bot's symbols ({', '.join(bot.symbols)}).")
    breach = loss_breach(bot=bot, ledger=ledger_for(bot))
    if breach is not None:
        return breach
    notional = intent.amount * price
    breach = order_notional_breach(notional=notional, limit=bot.max_order_notional)
    if breach is not None:
        return breach
    open_orders = Order.objects.filter(bot=bot, status__in=Order.OPEN_STATUSES)
    position = Position.objects.filter(bot=bot, symbol=intent.symbol).first()
    held = position.base_quantity if position else ZERO
    # Worst case: every resting order on the same side fills too.
    pending = open_orders.filter(symbol=intent.symbol, side=intent.side).aggregate(s=Sum("amount"))["s"] or ZERO
    breach = position_breach(intent=intent, price=price, held=held, pending=pending, limit=bot.max_position_notional)
    breach = breach or open_orders_breach(open_count=open_orders.count(), limit=bot.max_open_orders)
    if breach is not None:
        return breach
    recent = Order.objects.filter(bot=bot, created_at__gte=timezone.now() - RATE_WINDOW).count()
    breach = rate_breach(recent=recent, limit=bot.max_orders_per_minute)
    if breach is not None:
        return breach
    sizes = list(Order.objects.filter(bot=bot).order_by("-created_at", "-id").values_list("notional", flat=True)[:50])
    if len(sizes) >= ANOMALY_MIN_ORDERS:
        median = Decimal(statistics.median(sizes))
        if median > 0 and notional > bot.size_anomaly_factor * median:
            return Breach(
                Reason.SIZE_ANOMALY,
                f"Order notional {notional:.2f} is more than {bot.size_anomaly_factor}x the median {median:.2f} "
                f"of the bot's last {len(sizes)} orders.",
            )
    return None


def _refuse(bot: Bot, intent: OrderIntent, price: Decimal | None, breach: Breach) -> GateDecision:
    notional = intent.amount * price if price is not None and intent.amount.is_finite() else None
    refusal = GateRefusal.objects.create(
        bot=bot,
        symbol=intent.symbol[:30],
        side=intent.side[:4],
        amount=intent.amount,
        price=price,
        notional=notional,
        reason=breach.reason,
        message=breach.message[:500],
        intent_tag=intent.tag[:64],
    )
    record(
        actor=actor_of(bot),
        action="gate.refused",
        target=bot,
        data={
            "refusal": refusal.pk,
            "reason": breach.reason,
            "message": breach.message,
            "symbol": intent.symbol,
            "side": intent.side,
            "type": intent.type,
            "amount": intent.amount,
            "price": price,
            "notional": notional,
            "tag": intent.tag,
        },
    )
    events.gate_refusal(refusal)
    if breach.reason in (Reason.DAILY_LOSS, Reason.DRAWDOWN):
        bot_halt(
            bot=bot,
            reason=breach.reason,
            message=breach.message,
            kind=Bot.HaltKind.GATE,
            by="order gate (the bot's own ledger)",
            data=breach.data,
        )
    logger.warning("gate refused bot %s %s %s: %s", bot.pk, intent.side, intent.symbol, breach.reason)
    return GateDecision(False, breach.reason, breach.message, notional, refusal)


def gate_check(*, bot: Bot, intent: OrderIntent, price: Decimal | None) -> GateDecision:
    """Check one order against the halts and the bot's risk limits, reading the database now.

    `price` values the order: the limit price, or the market price for a market order. A refusal
    is stored (GateRefusal) and audited; a daily-loss or drawdown breach also halts the bot.
    Called by `place_order` under its locks; on its own it is a dry run that still records refusals.
    """
    with transaction.atomic():
        global_active, global_reason = global_halt_lock_shared()
        bot_halted, bot_reason, told_to_stop = _bot_halt_lock_shared(bot)
        bot.halted, bot.halt_reason = bot_halted, bot_reason
        problem = intent_invalid(intent, price)
        if problem is not None:
            breach: Breach | None = Breach(Reason.INVALID, problem)
        else:
            assert price is not None
            halts = (global_active, global_reason, bot_halted, bot_reason, told_to_stop)
            breach = _checks(bot, intent, price, halts)
        if breach is not None:
            return _refuse(bot, intent, price, breach)
        return GateDecision(True, notional=intent.amount * price if price is not None else None)


def _reference_price(bot: Bot, intent: OrderIntent, exchange: port.Exchange, price: Decimal | None) -> Decimal | None:
    if intent.type == Order.Type.LIMIT:
        return intent.price
    if price is not None:
        return price
    return market_price(bot=bot, exchange=exchange, symbol=intent.symbol)


def _send_live(order: Order, intent: OrderIntent, exchange: port.Exchange) -> None:
    """Send the order under its client order id (the port adopts an earlier attempt that got through)."""
    try:
        remote = exchange.place_order(
            symbol=intent.symbol,
            side=intent.side,
            type=intent.type,
            amount=intent.amount,
            price=intent.price,
            client_order_id=order.client_order_id,
        )
    except port.OrderRejected as exc:
        order.status, order.error = Order.Status.REJECTED, exc.message[:300]
        order.save(update_fields=["status", "error", "updated_at"])
        return
    except port.ExchangeUnavailable as exc:
        # Maybe placed, maybe not: the row stays "new" and the next sync looks it up by client order id.
        order.error = exc.message[:300]
        order.save(update_fields=["error", "updated_at"])
        return
    order_apply_exchange(order, remote)


def place_order(*, bot: Bot, intent: OrderIntent, exchange: port.Exchange, price: Decimal | None = None) -> Order:
    """Gate the intent, then place it (live: on the exchange through the port; paper: the local simulator).

    Returns the Order row; raises OrderRefused when the gate refuses (nothing is sent). The client
    order id comes from (bot, intent tag, the bot's current tick generation), so placing the same
    intent again in the same generation (a retried or re-run tick) returns the same order and
    never doubles it on the exchange. `price` is the market price for valuing a market order;
    without it the ticker is fetched.
    """
    ledger: BotLedger = ledger_for(bot)
    cid = client_order_id(bot.pk, intent.tag, ledger.generation)
    existing = Order.objects.filter(client_order_id=cid).first()
    if existing is not None:
        return existing
    reference = _reference_price(bot, intent, exchange, price) if intent_invalid(intent, Decimal(1)) is None else None
    sent: Order | None = None
    try:
        with transaction.atomic():
            decision = gate_check(bot=bot, intent=intent, price=reference)
            if decision.allowed:
                assert reference is not None
                order = _order_create(bot, intent, cid, ledger.generation, reference)
                if order.paper:
                    paper_place(order=order, exchange=exchange, market_price=reference)
                else:
                    # The halt row and the bot row stay share-locked until this transaction commits.
                    sent = order
                    _send_live(order, intent, exchange)
                _order_placed(order)
    except Exception:
        if sent is not None:
            # The exchange may hold it while its row is gone with the transaction: the next sync recovers it.
            order_unrecorded(sent)
        raise
    if not decision.allowed:
        raise OrderRefused(decision)
    return order


def _order_create(bot: Bot, intent: OrderIntent, cid: str, generation: int, reference: Decimal) -> Order:
    return Order.objects.create(
        bot=bot,
        account_id=bot.account_id,
        symbol=intent.symbol,
        side=intent.side,
        type=intent.type,
        amount=intent.amount,
        price=intent.price if intent.type == Order.Type.LIMIT else None,
        notional=intent.amount * reference,
        client_order_id=cid,
        intent_tag=intent.tag[:64],
        generation=generation,
        paper=bot.mode == Bot.Mode.PAPER,
    )


def _order_placed(order: Order) -> None:
    record(
        actor=actor_of(order.bot),
        action="order.placed",
        target=order,
        data={
            "bot": order.bot_id,
            "client_order_id": order.client_order_id,
            "exchange_order_id": order.exchange_order_id,
            "symbol": order.symbol,
            "side": order.side,
            "type": order.type,
            "amount": order.amount,
            "price": order.price,
            "notional": order.notional,
            "status": order.status,
            "paper": order.paper,
            "tag": order.intent_tag,
        },
    )
    events.order_new(order)


def order_cancel(*, order: Order, exchange: port.Exchange) -> Order:
    """Cancel one of our open orders (cancelling needs no gate: it only ever reduces risk)."""
    if not order.is_open:
        return order
    if order.paper:
        order.status = Order.Status.CANCELED
        order.save(update_fields=["status", "updated_at"])
        events.order_update(order)
    else:
        # Already gone (filled or canceled meanwhile): the port answers with the exchange's word on it.
        remote = exchange.cancel_order(
            symbol=order.symbol, exchange_order_id=order.exchange_order_id, client_order_id=order.client_order_id
        )
        order_apply_exchange(order, remote)
    record(
        actor=actor_of(order.bot),
        action="order.canceled",
        target=order,
        data={"client_order_id": order.client_order_id, "status": order.status},
    )
    return order


__all__ = [
    "GateDecision",
    "OrderRefused",
    "gate_check",
    "global_halt_active",
    "intent_invalid",
    "open_orders_breach",
    "order_cancel",
    "order_notional_breach",
    "place_order",
    "position_breach",
    "rate_breach",
]
