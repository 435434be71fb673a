"""A review's balance checks: each exchange account's opening snapshot plus the console's fills,
against its closing snapshot; what is left over is money that moved without the console."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any

from apps.exchanges.models import ExchangeAccount
from apps.reviews.figures import num, when
from apps.reviews.models import BalanceSnapshot
from apps.reviews.periods import Period
from apps.trading.ledger import split_symbol
from apps.trading.models import ZERO, Fill, Order

# Balances come through ccxt as floats: a difference this small is float noise, not money.
TOLERANCE_ABS = Decimal("1e-8")
TOLERANCE_REL = Decimal("1e-12")


def _snapshot(s: BalanceSnapshot | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"id": s.pk, "taken_at": when(s.taken_at), "source": s.source, "balances": dict(sorted(s.balances.items()))}


def _within_tolerance(difference: Decimal, expected: Decimal, actual: Decimal) -> bool:
    return abs(difference) <= max(TOLERANCE_ABS, TOLERANCE_REL * max(abs(expected), abs(actual)))


def _trade_effects(account: ExchangeAccount, after: dt.datetime, upto: dt.datetime) -> tuple[dict[str, Decimal], int]:
    """What the console's live fills did to the account's balances between two moments."""
    effects: dict[str, Decimal] = defaultdict(lambda: ZERO)
    fills = list(
        Fill.objects.filter(account=account, timestamp__gt=after, timestamp__lte=upto).values_list(
            "order_id", "price", "amount", "fee", "fee_currency"
        )
    )
    # Orders looked up by key, not joined: see apps.reviews.trades._replay.
    live_orders = {
        pk: (symbol, side)
        for pk, symbol, side in Order.objects.filter(pk__in={f[0] for f in fills}, paper=False).values_list(
            "pk", "symbol", "side"
        )
    }
    count = 0
    for order_id, price, amount, fee, fee_currency in fills:
        if order_id not in live_orders:
            continue
        symbol, side = live_orders[order_id]
        base, quote = split_symbol(symbol)
        sign = 1 if side == Order.Side.BUY else -1
        effects[base] += sign * amount
        effects[quote] -= sign * price * amount
        if fee and fee_currency:
            effects[fee_currency] -= fee  # buyer and seller both pay, in whatever currency the exchange took
        count += 1
    return dict(effects), count


def _bracketing(account: ExchangeAccount, period: Period) -> tuple[BalanceSnapshot | None, BalanceSnapshot | None]:
    """The opening and closing good snapshots of the period (see balance_check)."""
    good = BalanceSnapshot.objects.filter(account=account, ok=True)
    opening = good.filter(taken_at__lte=period.start).order_by("-taken_at", "-id").first()
    if opening is None:
        opening = good.filter(taken_at__gt=period.start, taken_at__lt=period.end).order_by("taken_at", "id").first()
    closing = None
    if opening is not None:
        closing = good.filter(taken_at__gte=period.end).order_by("taken_at", "id").first() or (
            good.filter(taken_at__gt=opening.taken_at).order_by("-taken_at", "-id").first()
        )
    return opening, closing


def _failures(account: ExchangeAccount, period: Period) -> tuple[int, dict[str, Any] | None]:
    """How many snapshots of the period failed, and the last one's time and error."""
    failed = BalanceSnapshot.objects.filter(
        account=account, ok=False, taken_at__gte=period.start, taken_at__lt=period.end
    ).order_by("-taken_at", "-id")
    last = failed.first()
    return failed.count(), None if last is None else {"taken_at": when(last.taken_at), "error": last.error}


def _asset_lines(
    opening: BalanceSnapshot, closing: BalanceSnapshot, effects: dict[str, Decimal]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per asset, opening plus trades against actual; and the differences no tolerance explains."""
    before = {k: Decimal(v) for k, v in opening.balances.items()}
    after = {k: Decimal(v) for k, v in closing.balances.items()}
    assets: list[dict[str, Any]] = []
    unexplained: list[dict[str, Any]] = []
    for asset in sorted(before.keys() | after.keys() | effects.keys()):
        start, trades, actual = before.get(asset, ZERO), effects.get(asset, ZERO), after.get(asset, ZERO)
        expected = start + trades
        difference = actual - expected
        explained = _within_tolerance(difference, expected, actual)
        assets.append(
            {
                "asset": asset,
                "opening": num(start),
                "trades": num(trades),
                "expected": num(expected),
                "actual": num(actual),
                "difference": "0" if explained else num(difference),
                "explained": explained,
            }
        )
        if not explained:
            unexplained.append({"asset": asset, "amount": num(difference)})
    return assets, unexplained


def _reported_transfers(
    account: ExchangeAccount, opening: BalanceSnapshot, closing: BalanceSnapshot
) -> tuple[list[dict[str, Any]], list[str]]:
    """What the exchange itself reports moving in the window (where it offers deposit/withdrawal
    history), each transfer once however many snapshots repeat it; and the snapshots' notes."""
    transfers: list[dict[str, Any]] = []
    notes: list[str] = []
    seen: set[tuple[str, str]] = set()
    window = BalanceSnapshot.objects.filter(
        account=account, ok=True, taken_at__gt=opening.taken_at, taken_at__lte=closing.taken_at
    ).order_by("taken_at", "id")
    for snap in window:
        for item in snap.transfers:
            key = (str(item.get("type")), str(item.get("id")))
            if key not in seen:
                seen.add(key)
                transfers.append(item)
        if snap.transfers_note and snap.transfers_note not in notes:
            notes.append(snap.transfers_note)
    return transfers, notes


def balance_check(account: ExchangeAccount, period: Period) -> dict[str, Any]:
    """Expected against reported: the opening snapshot plus the console's fills, against the closing one.

    Opening: the last good snapshot at or before the period's start (else the first inside it).
    Closing: the first good snapshot at or after its end (else the latest after the opening).
    Fills count between the two snapshots' times, so a window wider than the period still adds up;
    what is left over is money that moved without the console: deposits, withdrawals, transfers,
    or trades someone else made with the key.
    """
    opening, closing = _bracketing(account, period)
    failed_attempts, last_failure = _failures(account, period)
    result: dict[str, Any] = {
        "account_id": str(account.pk),
        "account": account.label,
        "exchange": account.exchange_id,
        "opening": _snapshot(opening),
        "closing": _snapshot(closing),
        "fills": 0,
        "assets": [],
        "unexplained": [],
        "transfers": [],
        "transfer_notes": [],
        "failed_attempts": failed_attempts,
        "last_failure": last_failure,
    }
    if opening is None:
        return result | {"status": "no_snapshot"}
    if closing is None:
        return result | {"status": "one_snapshot"}
    effects, result["fills"] = _trade_effects(account, opening.taken_at, closing.taken_at)
    result["assets"], result["unexplained"] = _asset_lines(opening, closing, effects)
    result["transfers"], result["transfer_notes"] = _reported_transfers(account, opening, closing)
    result["status"] = "mismatch" if result["unexplained"] else "ok"
    return result


def fund_movements(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    movements = []
    for check in checks:
        for item in check["unexplained"]:
            direction = "in" if Decimal(item["amount"]) > 0 else "out"
            movements.append(
                {
                    "account": check["account"],
                    "asset": item["asset"],
                    "amount": item["amount"],
                    "direction": direction,
                    "source": "balance check",
                    "from": check["opening"]["taken_at"],
                    "to": check["closing"]["taken_at"],
                }
            )
        for item in check["transfers"]:
            movements.append(
                {
                    "account": check["account"],
                    "asset": item.get("currency", ""),
                    "amount": item.get("amount", ""),
                    "direction": "in" if item.get("type") == "deposit" else "out",
                    "source": f"exchange {item.get('type')}",
                    "from": item.get("at"),
                    "to": item.get("at"),
                }
            )
    return movements
