"""Reconciliation: does the exchange agree with the database about a bot's account?

An open order that botconsole did not place means someone else is trading with the key: the
usual cause is a stolen key, so it raises a critical alert at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from apps.alerts.models import Alert
from apps.alerts.services import alert_raise
from apps.audit.services import record
from apps.bots.halts import actor_of
from apps.bots.models import Bot
from apps.exchanges import port
from apps.trading.ledger import split_symbol
from apps.trading.models import ZERO, Order, Position
from apps.trading.sync import never_received, order_apply_exchange

FOREIGN_ORDER_MESSAGE = (
    "An open order on exchange account {account} was not placed by botconsole ({side} {amount} {symbol} at "
    "{price}, exchange order {id}). The usual cause is a stolen API key: revoke the key on the exchange now, "
    "cancel the order, and check the account's trade history."
)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


@dataclass
class ReconcileReport:
    checked_open: int = 0
    foreign: list[str] = field(default_factory=list)  # exchange order ids
    updated: list[str] = field(default_factory=list)  # our client order ids whose state changed
    missing: list[str] = field(default_factory=list)  # ours, unknown to the exchange
    balance_shortfalls: dict[str, str] = field(default_factory=dict)  # asset -> exchange total vs what bots hold


def reconcile(*, bot: Bot, exchange: port.Exchange) -> ReconcileReport:
    """Compare the exchange's open orders and balances with the database for a live bot's account."""
    report = ReconcileReport()
    if bot.mode == Bot.Mode.PAPER:
        return report  # paper orders never reach the exchange
    # Every symbol, not only the bot's: a thief trades whatever market they like.
    remote = exchange.open_orders(None)
    report.checked_open = len(remote)
    remote_cids = {str(o.client_order_id) for o in remote}
    _foreign_orders(bot, remote, remote_cids, report)
    _ours_not_open(bot, exchange, remote_cids, report)
    _balances(bot, exchange, report)
    return report


def _foreign_orders(bot: Bot, remote: list[port.RemoteOrder], remote_cids: set[str], report: ReconcileReport) -> None:
    """An open order of the account that botconsole did not place: audited and alerted, once per order."""
    known = set(
        Order.objects.filter(account_id=bot.account_id, client_order_id__in=remote_cids).values_list(
            "client_order_id", flat=True
        )
    )
    for raw in remote:
        if str(raw.client_order_id) in known:
            continue
        order_id = str(raw.id)
        report.foreign.append(order_id)
        already = Alert.objects.filter(
            kind="foreign_order", data__account=str(bot.account_id), data__exchange_order_id=order_id
        ).exists()
        if not already:
            _foreign_order_alert(bot, raw, order_id)


def _foreign_order_alert(bot: Bot, raw: port.RemoteOrder, order_id: str) -> None:
    data = {
        "account": str(bot.account_id),
        "exchange_order_id": order_id,
        "bot": bot.pk,
        "client_order_id": raw.client_order_id,
        "symbol": raw.symbol,
        "side": raw.side,
        "amount": _text(raw.amount),
        "price": _text(raw.price),
    }
    record(actor=actor_of(bot), action="reconcile.foreign_order", target=bot.account, data=data)
    alert_raise(
        kind="foreign_order",
        severity=Alert.Severity.CRITICAL,
        target=bot.account,
        data=data,
        source=actor_of(bot),
        message=FOREIGN_ORDER_MESSAGE.format(
            account=bot.account.label,
            side=raw.side,
            amount=_text(raw.amount),
            symbol=raw.symbol,
            price=_text(raw.price),
            id=order_id,
        ),
    )


def _ours_not_open(bot: Bot, exchange: port.Exchange, remote_cids: set[str], report: ReconcileReport) -> None:
    """Our orders the exchange no longer lists as open: filled, cancelled, expired, or never received."""
    for order in Order.objects.filter(bot=bot, paper=False, status__in=Order.OPEN_STATUSES).exclude(
        client_order_id__in=remote_cids
    ):
        try:
            found = exchange.order(symbol=order.symbol, client_order_id=order.client_order_id)
        except port.OrderNotFound:
            report.missing.append(order.client_order_id)
            if order.exchange_order_id is None:
                never_received(order)
            continue
        if order_apply_exchange(order, found):
            report.updated.append(order.client_order_id)


def _balances(bot: Bot, exchange: port.Exchange, report: ReconcileReport) -> None:
    """The exchange must hold at least what the account's bots think they hold."""
    totals = exchange.balances().total
    held: dict[str, Decimal] = {}
    for position in Position.objects.filter(bot__account_id=bot.account_id, bot__mode=Bot.Mode.LIVE):
        base, _ = split_symbol(position.symbol)
        held[base] = held.get(base, ZERO) + position.base_quantity
    for asset, amount in held.items():
        on_exchange = totals.get(asset, ZERO)
        if amount > 0 and on_exchange < amount:
            report.balance_shortfalls[asset] = f"{on_exchange} on the exchange, {amount} held by bots"
    if report.balance_shortfalls:
        alert_raise(
            kind="balance_mismatch",
            severity=Alert.Severity.WARNING,
            target=bot.account,
            source=actor_of(bot),
            message=f"Account {bot.account.label} holds less than its bots' positions: {report.balance_shortfalls}.",
            data={"account": str(bot.account_id), "shortfalls": report.balance_shortfalls},
        )
