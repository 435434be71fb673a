"""What a day's or a month's review shows, built from the database as one JSON-ready dict.

The same dict is rendered as the page, exported as CSV and JSON, and hashed (SHA-256 of its
canonical JSON) for sign-offs: a reviewer signs exactly what the export contains. It holds only
what the period's rows say (never "now": no live prices, no ages), so it changes only when the
underlying data does. Amounts are decimal strings.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlencode

from django.db.models import CharField, Count, F, Max, Min, Q
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce
from django.urls import reverse

from apps.accounts.models import User
from apps.alerts.models import Alert
from apps.audit.chain import canonical_time
from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.killswitch.models import BreakerRule, BreakerTrip, KillRun
from apps.reviews.models import BalanceSnapshot, ReviewSignoff
from apps.reviews.periods import Period
from apps.trading.ledger import _apply, split_symbol
from apps.trading.models import ZERO, Fill, GateRefusal, Order, Position

FORMAT_VERSION = 1
REPLAY_BATCH = 5000
STORED = Decimal("1e-12")  # the trading tables' precision (numeric(28, 12))
# Balances come through ccxt as floats: a difference this small is float noise, not money.
TOLERANCE_ABS = Decimal("1e-8")
TOLERANCE_REL = Decimal("1e-12")
FAILED_LOGIN_ACTIONS = ("login.failed", "login.otp_failed", "auth.step_up_failed")
# What a review shows for a typed user name that is no user's: it is sometimes a password typed in the
# wrong field. The same for every reader, so every reader's review (and its digest) is the same.
NOT_A_USER = "(not a user)"
# Alert kinds that have a section of their own; every other kind is listed under "other alerts".
SECTION_ALERTS = ("circuit_breaker", "foreign_order", "key_check_failed", "deadman_failing", "login_locked_out")


def num(value: Decimal) -> str:
    """A decimal as a plain string at the stored precision: "0.001", "10", never "1E+1" or "-0"."""
    rounded = value.quantize(STORED, rounding=ROUND_HALF_UP)
    return "0" if rounded == 0 else format(rounded.normalize(), "f")


def when(value: dt.datetime | None) -> str | None:
    return canonical_time(value) if value is not None else None


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def review_digest(data: dict[str, Any]) -> str:
    """SHA-256 (hex) of the review's canonical JSON: sorted keys, no spaces, UTF-8."""
    return hashlib.sha256(canonical_json(data)).hexdigest()


# -- trades and PnL ------------------------------------------------------------------------------


@dataclass
class _Row:
    bot_id: int
    bot: str
    mode: str
    symbol: str
    orders: int = 0
    fills: int = 0
    buys: int = 0
    sells: int = 0
    bought: Decimal = ZERO
    sold: Decimal = ZERO
    buy_value: Decimal = ZERO
    sell_value: Decimal = ZERO
    fees: Decimal = ZERO
    realized_pnl: Decimal = ZERO

    def as_dict(self) -> dict[str, Any]:
        base, quote = split_symbol(self.symbol)
        return {
            "bot_id": self.bot_id,
            "bot": self.bot,
            "mode": self.mode,
            "symbol": self.symbol,
            "base": base,
            "quote": quote,
            "orders": self.orders,
            "fills": self.fills,
            "buys": self.buys,
            "sells": self.sells,
            "bought": num(self.bought),
            "sold": num(self.sold),
            "buy_value": num(self.buy_value),
            "sell_value": num(self.sell_value),
            "fees": num(self.fees),
            "realized_pnl": num(self.realized_pnl),
        }


def _stored(position: Position) -> None:
    # The ledger saves the position after every fill, rounding to the column's 12 places; the
    # replay rounds the same way, so its running figures are the ones the ledger computed.
    for name in ("base_quantity", "realized_pnl", "fees_quote"):
        setattr(position, name, getattr(position, name).quantize(STORED, rounding=ROUND_HALF_UP))
    if position.average_entry is not None:
        position.average_entry = position.average_entry.quantize(STORED, rounding=ROUND_HALF_UP)


def _replay(bot_ids: set[int], last_id: int) -> Iterator[tuple[Any, ...]]:
    """The bots' fills up to #last_id in id order, as (bot_id, paper, symbol, side, price, amount, fee,
    fee_currency, timestamp), in keyset batches: constant memory, and no query joins fills to orders
    over a range (with stale statistics PostgreSQL was measured looping over one for each of them)."""
    accounts = set(Bot.objects.filter(pk__in=bot_ids).values_list("account_id", flat=True))
    fills = (
        Fill.objects.filter(account_id__in=accounts, id__lte=last_id)
        .order_by("id")
        .values_list("id", "order_id", "price", "amount", "fee", "fee_currency", "timestamp")
    )
    after = 0
    while batch := list(fills.filter(id__gt=after)[:REPLAY_BATCH]):
        orders = {
            pk: rest
            for pk, *rest in Order.objects.filter(pk__in={f[1] for f in batch}, bot_id__in=bot_ids).values_list(
                "pk", "bot_id", "paper", "symbol", "side"
            )
        }
        for _, order_id, *values in batch:
            if order_id in orders:  # not another bot's fill on a shared account
                yield (*orders[order_id], *values)
        after = batch[-1][0]


def _trade_rows(period: Period) -> list[_Row]:
    """Per bot, mode and symbol: the period's orders and fills, and the PnL its fills realized.

    A fill's realized PnL depends on the average entry built by every earlier fill, so each bot's
    fills are replayed in the order the ledger applied them (by id), with the ledger's own
    arithmetic, from its first fill to the last fill of the period; only the period's fills count.
    """
    in_period = Q(timestamp__gte=period.start, timestamp__lt=period.end)
    fills = Fill.objects.filter(in_period)
    orders = Order.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
    filled_orders = set(fills.values_list("order_id", flat=True))
    bot_ids = set(Order.objects.filter(pk__in=filled_orders).values_list("bot_id", flat=True))
    bot_ids |= set(orders.values_list("bot_id", flat=True))
    names = dict(Bot.objects.filter(pk__in=bot_ids).values_list("pk", "name"))
    rows: dict[tuple[int, bool, str], _Row] = {}

    def row(bot_id: int, paper: bool, symbol: str) -> _Row:
        key = (bot_id, paper, symbol)
        if key not in rows:
            rows[key] = _Row(bot_id, names.get(bot_id, f"bot {bot_id}"), "paper" if paper else "live", symbol)
        return rows[key]

    counted = orders.order_by().values("bot_id", "paper", "symbol").annotate(n=Count("id"))
    for c in counted:
        row(c["bot_id"], c["paper"], c["symbol"]).orders += c["n"]

    last_id = fills.aggregate(m=Max("id"))["m"]
    if last_id is None:
        return list(rows.values())
    positions: dict[tuple[int, str], Position] = {}
    for fill_row in _replay(bot_ids, last_id):
        bot_id, paper, symbol, side, price, amount, fee, fee_currency, timestamp = fill_row
        position = positions.get((bot_id, symbol))
        if position is None:
            position = positions[bot_id, symbol] = Position(bot_id=bot_id, symbol=symbol)
        realized_before, fees_before = position.realized_pnl, position.fees_quote
        _apply(position, side=side, price=price, amount=amount, fee=fee, fee_currency=fee_currency)
        _stored(position)
        if not period.start <= timestamp < period.end:
            continue
        r = row(bot_id, paper, symbol)
        r.fills += 1
        r.realized_pnl += position.realized_pnl - realized_before
        r.fees += position.fees_quote - fees_before
        if side == Order.Side.BUY:
            r.buys, r.bought, r.buy_value = r.buys + 1, r.bought + amount, r.buy_value + price * amount
        else:
            r.sells, r.sold, r.sell_value = r.sells + 1, r.sold + amount, r.sell_value + price * amount
    return list(rows.values())


def _pnl(rows: Iterable[_Row]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per bot (and quote currency), and totals per mode and quote currency: amounts in different
    currencies are never added together."""
    per_bot: dict[tuple[Any, ...], dict[str, Any]] = {}
    totals: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        quote = split_symbol(r.symbol)[1]
        bot_entry = per_bot.setdefault((r.mode, r.bot, r.bot_id, quote), {"bot_id": r.bot_id, "bot": r.bot})
        total_entry = totals.setdefault((r.mode, quote), {})
        for entry in (bot_entry, total_entry):
            entry.setdefault("mode", r.mode)
            entry.setdefault("quote", quote)
            entry["fills"] = entry.get("fills", 0) + r.fills
            entry["fees"] = entry.get("fees", ZERO) + r.fees
            entry["realized_pnl"] = entry.get("realized_pnl", ZERO) + r.realized_pnl

    def out(table: dict[Any, dict[str, Any]]) -> list[dict[str, Any]]:
        order = sorted(table, key=lambda k: (k[0] != "live", *k[1:]))
        return [
            {**table[k], "fees": num(table[k]["fees"]), "realized_pnl": num(table[k]["realized_pnl"])} for k in order
        ]

    return out(per_bot), out(totals)


# -- balance check --------------------------------------------------------------------------------


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
    # Orders looked up by key, not joined: see _replay.
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


def _balance_check(account: ExchangeAccount, period: Period) -> dict[str, Any]:
    """Expected against reported: the opening snapshot plus the console's fills, against the closing one.

    Opening: the last good snapshot at or before the period's start (else the first inside it).
    Closing: the first good snapshot at or after its end (else the latest after the opening).
    Fills count between the two snapshots' times, so a window wider than the period still adds up;
    what is left over is money that moved without the console: deposits, withdrawals, transfers,
    or trades someone else made with the key.
    """
    good = BalanceSnapshot.objects.filter(account=account, ok=True)
    opening = good.filter(taken_at__lte=period.start).order_by("-taken_at", "-id").first()
    if opening is None:
        opening = good.filter(taken_at__gt=period.start, taken_at__lt=period.end).order_by("taken_at", "id").first()
    closing = None
    if opening is not None:
        closing = good.filter(taken_at__gte=period.end).order_by("taken_at", "id").first() or (
            good.filter(taken_at__gt=opening.taken_at).order_by("-taken_at", "-id").first()
        )
    failed = BalanceSnapshot.objects.filter(
        account=account, ok=False, taken_at__gte=period.start, taken_at__lt=period.end
    ).order_by("-taken_at", "-id")
    last_failure = failed.first()
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
        "failed_attempts": failed.count(),
        "last_failure": None,
    }
    if last_failure is not None:
        result["last_failure"] = {"taken_at": when(last_failure.taken_at), "error": last_failure.error}
    if opening is None:
        result["status"] = "no_snapshot"
        return result
    if closing is None:
        result["status"] = "one_snapshot"
        return result
    effects, result["fills"] = _trade_effects(account, opening.taken_at, closing.taken_at)
    before = {k: Decimal(v) for k, v in opening.balances.items()}
    after = {k: Decimal(v) for k, v in closing.balances.items()}
    for asset in sorted(before.keys() | after.keys() | effects.keys()):
        start, trades, actual = before.get(asset, ZERO), effects.get(asset, ZERO), after.get(asset, ZERO)
        expected = start + trades
        difference = actual - expected
        explained = _within_tolerance(difference, expected, actual)
        result["assets"].append(
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
            result["unexplained"].append({"asset": asset, "amount": num(difference)})
    # What the exchange itself reports moving in the window (where it offers deposit/withdrawal history).
    seen: set[tuple[str, str]] = set()
    for snap in good.filter(taken_at__gt=opening.taken_at, taken_at__lte=closing.taken_at).order_by("taken_at", "id"):
        for item in snap.transfers:
            key = (str(item.get("type")), str(item.get("id")))
            if key not in seen:
                seen.add(key)
                result["transfers"].append(item)
        if snap.transfers_note and snap.transfers_note not in result["transfer_notes"]:
            result["transfer_notes"].append(snap.transfers_note)
    result["status"] = "mismatch" if result["unexplained"] else "ok"
    return result


def _fund_movements(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


# -- unusual events -------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _alerts(period: Period) -> Any:
    return Alert.objects.filter(created_at__gte=period.start, created_at__lt=period.end).order_by("created_at", "id")


def _audit(period: Period) -> Any:
    return AuditEntry.objects.filter(created_at__gte=period.start, created_at__lt=period.end).order_by("seq")


def _events(period: Period, labels: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """`labels`: account labels by id, for the alerts that name an account."""
    alerts = _alerts(period)
    reasons = dict(GateRefusal.Reason.choices)
    refusals = (
        GateRefusal.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
        .values("bot_id", "bot__name", "reason")
        .annotate(count=Count("id"), first=Min("created_at"), last=Max("created_at"))
        .order_by("bot__name", "reason")
    )
    breakers: list[dict[str, Any]] = []
    kinds = dict(BreakerRule.Kind.choices)
    for trip in BreakerTrip.objects.filter(tripped_at__gte=period.start, tripped_at__lt=period.end).order_by(
        "tripped_at", "id"
    ):
        breakers.append(
            {
                "at": when(trip.tripped_at),
                "source": kinds.get(trip.kind, trip.kind),
                "subject": trip.subject,
                "action": trip.action,
                "message": trip.message,
                "cleared_at": when(trip.cleared_at),
            }
        )
    for alert in alerts.filter(kind="circuit_breaker").exclude(data__has_key="trip"):
        subject = f"bot:{alert.data.get('bot')}"
        breakers.append(
            {
                "at": when(alert.created_at),
                "source": "Order gate",
                "subject": subject,
                "action": "halt_bot",
                "message": alert.message,
                "cleared_at": None,
            }
        )
    breakers.sort(key=lambda b: b["at"])
    failed = (
        _audit(period)
        .filter(action__in=FAILED_LOGIN_ACTIONS)
        .annotate(username=Coalesce(KeyTextTransform("username", "data"), F("actor"), output_field=CharField()))
        .values("action", "username")
        .annotate(
            count=Count("seq"), addresses=Count("ip", distinct=True), first=Min("created_at"), last=Max("created_at")
        )
        .order_by("username", "action")
    )
    failed_rows = list(failed)
    lockout_entries = list(_audit(period).filter(action="login.locked_out"))
    typed = {str(r["username"]) for r in failed_rows} | {str(e.data.get("username", "")) for e in lockout_entries}
    users = set(User.objects.filter(username__in=typed).values_list("username", flat=True))

    def shown(name: object) -> str:
        return str(name) if str(name) in users else NOT_A_USER

    return {
        "gate_refusals": [
            {
                "bot_id": r["bot_id"],
                "bot": r["bot__name"],
                "reason": r["reason"],
                "reason_label": reasons.get(r["reason"], r["reason"]),
                "count": r["count"],
                "first": when(r["first"]),
                "last": when(r["last"]),
            }
            for r in refusals
        ],
        "breakers": breakers,
        "foreign_orders": [
            {
                "at": when(a.created_at),
                "account": labels.get(str(a.data.get("account")), str(a.data.get("account"))),
                "symbol": a.data.get("symbol"),
                "side": a.data.get("side"),
                "amount": _text(a.data.get("amount")),
                "price": _text(a.data.get("price")),  # none for a market order
                "exchange_order_id": a.data.get("exchange_order_id"),
                "message": a.message,
            }
            for a in alerts.filter(kind="foreign_order")
        ],
        "kills": [
            {
                "id": k.pk,
                "at": when(k.created_at),
                "scope": k.scope,
                "bot": k.bot.name if k.bot else None,
                "reason": k.reason,
                "requested_by": k.requested_by.username if k.requested_by else f"({k.requested_via})",
                "status": k.status,
                "cancelled": k.orders_cancelled,
                "still_open": k.still_open_text,  # "unknown (…)" when an account was not reached, never 0
            }
            for k in KillRun.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
            .select_related("bot", "requested_by")
            .order_by("created_at", "id")
        ],
        "new_ip_logins": [
            {"seq": e.seq, "at": when(e.created_at), "user": e.actor, "ip": e.ip}
            for e in _audit(period).filter(action="login.success", data__new_ip=True)
        ],
        "failed_logins": [
            {
                "action": r["action"],
                "username": shown(r["username"]),
                "count": r["count"],
                "addresses": r["addresses"],
                "first": when(r["first"]),
                "last": when(r["last"]),
            }
            for r in failed_rows
        ],
        "lockouts": [
            {
                "seq": e.seq,
                "at": when(e.created_at),
                "username": shown(e.data.get("username", "")),
                "ip": e.data.get("ip") or e.ip,
            }
            for e in lockout_entries
        ],
        "key_check_failures": [
            {"at": when(a.created_at), "account": labels.get(str(a.data.get("account")), ""), "message": a.message}
            for a in alerts.filter(kind="key_check_failed")
        ],
        "deadman_failures": [
            {"at": when(a.created_at), "severity": a.severity, "message": a.message}
            for a in alerts.filter(kind="deadman_failing")
        ],
        "other_alerts": [
            {"at": when(a.created_at), "kind": a.kind, "severity": a.severity, "message": a.message}
            for a in alerts.exclude(kind__in=SECTION_ALERTS)
        ],
    }


# -- the review -----------------------------------------------------------------------------------


def review_build(period: Period) -> dict[str, Any]:
    """The whole review of a period, JSON-ready; the same input always gives the same dict."""
    rows = sorted(_trade_rows(period), key=lambda r: (r.mode != "live", r.bot, r.symbol))
    per_bot, totals = _pnl(rows)
    accounts = list(ExchangeAccount.objects.order_by("label"))
    checks = [_balance_check(account, period) for account in accounts]
    labels = {str(a.pk): a.label for a in accounts}
    return {
        "format": FORMAT_VERSION,
        "period": {"kind": period.kind, "key": period.key, "start": when(period.start), "end": when(period.end)},
        "trades": [r.as_dict() for r in rows],
        "pnl": per_bot,
        "pnl_totals": totals,
        "balances": checks,
        "fund_movements": _fund_movements([c for c in checks if c["status"] in ("ok", "mismatch")]),
        "events": _events(period, labels),
    }


# -- sign-offs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignoffView:
    signoff: ReviewSignoff
    current: bool  # the review still has the digest that was signed
    audit_matches: bool  # the audit entry names the same reviewer, period and digest


def _matches(signoff: ReviewSignoff, entry: AuditEntry | None) -> bool:
    if entry is None or entry.action != "review.signed_off" or entry.actor_user_id != signoff.signed_by_id:
        return False
    data = entry.data if isinstance(entry.data, dict) else {}
    return bool(
        data.get("digest") == signoff.digest
        and data.get("kind") == signoff.period_kind
        and data.get("period") == signoff.period
        and data.get("note", "") == signoff.note
    )


def signoffs_for(period: Period, digest: str) -> list[SignoffView]:
    signoffs = list(
        ReviewSignoff.objects.filter(period_kind=period.kind, period=period.key).select_related("signed_by")
    )
    entries = AuditEntry.objects.in_bulk([s.audit_seq for s in signoffs])
    return [SignoffView(s, s.digest == digest, _matches(s, entries.get(s.audit_seq))) for s in signoffs]


def latest_signoffs(periods: Iterable[Period]) -> dict[tuple[str, str], ReviewSignoff]:
    """The newest sign-off of each period, in one query."""
    wanted = Q()
    for p in periods:
        wanted |= Q(period_kind=p.kind, period=p.key)
    found: dict[tuple[str, str], ReviewSignoff] = {}
    for s in ReviewSignoff.objects.filter(wanted).select_related("signed_by").order_by("-signed_at", "-id"):
        found.setdefault((s.period_kind, s.period), s)
    return found


# -- links to the audit log -----------------------------------------------------------------------

AUDIT_SECTIONS = {
    "trades": {"action": "order.*"},
    "balances": {"action": "review.balance_snapshot"},
    "gate_refusals": {"action": "gate.refused"},
    "breakers": {"action": "alert.circuit_breaker"},
    "foreign_orders": {"action": "reconcile.foreign_order"},
    "kills": {"action": "killswitch.*"},
    "new_ip_logins": {"action": "login.success", "q": '"new_ip": true'},
    "failed_logins": {"action": "login.*"},
    "lockouts": {"action": "login.locked_out"},
    "key_check_failures": {"action": "alert.key_check_failed"},
    "deadman_failures": {"action": "alert.deadman_failing"},
    "other_alerts": {"action": "alert.*"},
}


def audit_links(period: Period) -> dict[str, str]:
    """The audit log filtered to the period (apps.audit.forms GET parameters), per section."""
    base = reverse("audit:list")
    span = {"since": f"{period.start:%Y-%m-%dT%H:%M}", "until": f"{period.end:%Y-%m-%dT%H:%M}"}
    links = {name: f"{base}?{urlencode({**span, **extra})}" for name, extra in AUDIT_SECTIONS.items()}
    links["period"] = f"{base}?{urlencode(span)}"
    links["review"] = f"{base}?{urlencode({'target': f'reviews.review:{period.target_id}'})}"
    return links
