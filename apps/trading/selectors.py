"""What the pages read about trading: each bot's PnL, orders, fills, refusals and dead-man's switch."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import redis
from django.db.models import Sum
from django.utils import timezone

from apps.bots.models import Bot
from apps.core.display import moment_text, moment_with_ago
from apps.trading import deadman
from apps.trading.ledger import capital_basis, ledger_for, quote_of
from apps.trading.models import Fill, GateRefusal, Order, Position


def bot_pnl(bot: Bot) -> dict[str, Decimal]:
    totals = Position.objects.filter(bot=bot).aggregate(realized=Sum("realized_pnl"), unrealized=Sum("unrealized_pnl"))
    return _pnl(totals["realized"], totals["unrealized"])


def _pnl(realized: Decimal | None, unrealized: Decimal | None) -> dict[str, Decimal]:
    realized, unrealized = realized or Decimal(0), unrealized or Decimal(0)
    return {"realized": realized, "unrealized": unrealized, "total": realized + unrealized}


# How far back the bot page's "Orders refused" warning looks: long enough to be seen after a
# glance away, short enough that an old refusal does not read as a current problem.
REFUSAL_WARNING_WINDOW = timedelta(minutes=5)
REFUSAL_WARNING_MAX = 3


def bot_rows(*, archived: bool = False) -> list[dict[str, Any]]:
    """The bots list: each bot with its PnL and heartbeat age.

    Archived bots are kept for the audit log and the reviews but are out of every list of bots
    (the dashboard's included) unless `archived` asks for them alone.
    """
    now = timezone.now()
    bots = list(Bot.objects.select_related("account").filter(archived_at__isnull=not archived).order_by("name"))
    # Every bot's PnL in one query (a query per bot made a 100-bot dashboard run 100 of them).
    totals = {
        row["bot"]: row
        for row in Position.objects.filter(bot__in=bots)
        .values("bot")
        .annotate(realized=Sum("realized_pnl"), unrealized=Sum("unrealized_pnl"))
        .order_by()
    }
    rows = []
    for bot in bots:
        age = (now - bot.last_heartbeat).total_seconds() if bot.last_heartbeat else None
        stale = age is None or age > max(3 * bot.tick_interval_s, 30)
        sums = totals.get(bot.pk, {})
        pnl = _pnl(sums.get("realized"), sums.get("unrealized"))
        rows.append({"bot": bot, "pnl": pnl, "unit": quote_of(bot), "heartbeat_age": age, "stale": stale})
    return rows


def bot_activity(bot: Bot) -> dict[str, Any]:
    """The bot page: open orders, recent fills, positions, recent gate refusals, PnL."""
    return {
        "open_orders": Order.objects.filter(bot=bot, status__in=Order.OPEN_STATUSES).order_by("-created_at")[:100],
        "fills": Fill.objects.filter(order__bot=bot).select_related("order").order_by("-timestamp")[:50],
        "positions": list(Position.objects.filter(bot=bot).order_by("symbol")),
        "refusals": GateRefusal.objects.filter(bot=bot).order_by("-created_at")[:50],
        "recent_refusals": bot_recent_refusals(bot),
        "refusal_window_s": int(REFUSAL_WARNING_WINDOW.total_seconds()),
        "pnl": bot_pnl(bot),
        "deadman": bot_deadman(bot),
    }


def bot_recent_refusals(bot: Bot) -> list[GateRefusal]:
    """The newest gate refusals of the last few minutes: the warning at the top of the bot page."""
    since = timezone.now() - REFUSAL_WARNING_WINDOW
    recent = GateRefusal.objects.filter(bot=bot, created_at__gte=since).order_by("-created_at", "-id")
    return list(recent[:REFUSAL_WARNING_MAX])


def bot_deadman(bot: Bot) -> dict[str, Any]:
    """The bot's dead-man's switch as its worker last reported it: a state and a sentence for the page."""
    if bot.mode != Bot.Mode.LIVE:
        return {"state": "paper", "summary": "Not used (paper bot: no orders on the exchange).", "alarm": False}
    try:
        report = deadman.deadman_state(bot.pk)
    except (redis.RedisError, ValueError):
        return {"state": "unknown", "summary": "Unknown (its state cannot be read).", "alarm": True}
    if report is None:
        return {"state": "none", "summary": "Not armed yet (it is armed when the bot's worker starts).", "alarm": False}
    state, exchange = str(report.get("state")), report.get("exchange") or bot.account.exchange_id
    now = time.time()

    def at(key: str) -> datetime | None:
        value = report.get(key)
        return datetime.fromtimestamp(float(value), tz=UTC) if isinstance(value, int | float) else None

    last, expires = at("last_refresh"), None
    timeout = report.get("timeout_s")
    if last is not None and isinstance(timeout, int | float):
        expires = last + timedelta(seconds=float(timeout))
    last_text = moment_with_ago(last) if last else ""
    if state == deadman.State.UNAVAILABLE:
        summary = f"Unavailable: {exchange} offers no dead-man's switch; if the console dies, the orders stay."
        return {"state": state, "summary": summary, "alarm": False}
    if state == deadman.State.DISARMED:
        updated = at("updated_at")
        when = f" at {moment_text(updated)}" if updated else ""
        return {"state": state, "summary": f"Disarmed{when} (the bot was stopped).", "alarm": False}
    if expires is not None and expires.timestamp() <= now:
        summary = (
            f"Lapsed at {moment_text(expires)} (last refresh {last_text}): {exchange} has cancelled "
            "the open orders it covered, unless a new worker re-armed it since."
        )
        return {"state": "lapsed", "summary": summary, "alarm": True}
    if state == deadman.State.FAILING:
        failing = f"Refresh failing ({report.get('failures')} in a row: {report.get('error') or 'error'})"
        if expires is None:
            return {"state": state, "summary": f"{failing}; not armed.", "alarm": True}
        return {"state": state, "summary": f"{failing}; armed until {moment_text(expires)}.", "alarm": True}
    summary = (
        f"Armed: {exchange} cancels the open orders if the console stops refreshing it for "
        f"{float(timeout or 0):g} s. Last refresh {last_text}."
    )
    return {"state": state, "summary": summary, "alarm": False}


def bot_books(bot: Bot) -> dict[str, Any]:
    """The bot's own accounting, as its loss limits see it: equity, today's PnL, peak and drawdown."""
    ledger = ledger_for(bot)
    last, start, peak = ledger.last_equity, ledger.day_start_equity, ledger.peak_equity
    return {
        "unit": quote_of(bot),
        "basis": capital_basis(bot),
        "equity": last,
        "day_start": start,
        "today": last - start if last is not None and start is not None else None,
        "peak": peak,
        "drawdown_pct": (peak - last) / peak * 100 if last is not None and peak else None,
        "at": ledger.equity_at,
    }


def bot_open_order_count(bot_id: int) -> int:
    """How many orders of the bot are still open (archiving a bot asks this)."""
    return Order.objects.filter(bot_id=bot_id, status__in=Order.OPEN_STATUSES).count()
