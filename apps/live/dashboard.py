"""The dashboard's data: the fleet, the latest visible events and alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apps.accounts.models import User
from apps.alerts.models import Alert
from apps.alerts.selectors import alert_visible
from apps.bots.halts import global_halt_state, halt_of
from apps.bots.models import Bot
from apps.events.selectors import event_cursor
from apps.exchanges.selectors import market_decimals
from apps.killswitch.models import KillRun
from apps.killswitch.report import result_line
from apps.killswitch.selectors import bots_to_restart
from apps.live.selectors import visible_events
from apps.trading.selectors import bot_rows


def dashboard_context(user: User) -> dict[str, Any]:
    """The dashboard: the fleet, the latest visible events (the live feed's start) and alerts."""
    # Only settled events: a row an open transaction commits later with a lower number is left to
    # the page's catch-up, which starts from this cursor (a page cursor past it would skip that row).
    last = event_cursor()
    recent = visible_events(user, after=max(0, last - 300), bot_id=None, limit=500, upto=last)
    feed = [e for e in recent if e.kind in ("order_new", "order_update", "fill", "gate_refusal", "kill_switch")][-30:]
    alerts = [a for a in Alert.objects.order_by("-created_at")[:50] if alert_visible(user, a)][:10]
    halt = global_halt_state()
    rows = bot_rows()
    return {
        "rows": rows,
        # The decimals of the fleet's markets (where this process knows them), for the feed's figures.
        "market_decimals": market_decimals(
            (row["bot"].account.exchange_id, symbol) for row in rows for symbol in row["bot"].symbols
        ),
        "feed": list(reversed(feed)),
        "alerts": alerts,
        "cursor": last,
        "halt_reason": (halt.reason or "halted") if halt.active else None,
        **kill_card(user, halt_since=halt.since if halt.active else None, halt_active=halt.active),
    }


def kill_card(user: User, *, halt_since: datetime | None, halt_active: bool) -> dict[str, Any]:
    """The dashboard's kill card: the panic button (for who may press it), the halt and the last kill run."""
    last = KillRun.objects.select_related("bot").first()
    return {
        "halt_since": halt_since,
        "last_kill": last,
        "last_kill_result": result_line(last) if last is not None else "",
        "can_kill": user.has_perm("accounts.trigger_killswitch"),
        "can_resume": user.has_perm("accounts.resume_after_kill"),
        "restartable": len(bots_to_restart()) if halt_active else 0,
        "bot_halts": bot_halts(),
    }


def bot_halts() -> list[dict[str, Any]]:
    """Every bot halted on its own (a breaker, the gate, an emergency stop): what set it, when, the figures."""
    halted = Bot.objects.filter(halted=True, archived_at__isnull=True).order_by("halted_at", "name")[:50]
    return [{"bot": bot, **(halt_of(bot) or {})} for bot in halted]
