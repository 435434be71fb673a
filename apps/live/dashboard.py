"""The dashboard's data: the fleet, the latest visible events and alerts."""

from __future__ import annotations

from typing import Any

from django.db.models import Max

from apps.accounts.models import User
from apps.alerts.models import Alert
from apps.alerts.selectors import alert_visible
from apps.bots.halts import global_halt_reason
from apps.events.models import Event
from apps.live.selectors import visible_events
from apps.trading.selectors import bot_rows


def dashboard_context(user: User) -> dict[str, Any]:
    """The dashboard: the fleet, the latest visible events (the live feed's start) and alerts."""
    last = Event.objects.aggregate(last=Max("seq"))["last"] or 0
    recent = visible_events(user, after=max(0, last - 300), bot_id=None, limit=500)
    feed = [e for e in recent if e.kind in ("order_new", "order_update", "fill", "gate_refusal", "kill_switch")][-30:]
    alerts = [a for a in Alert.objects.order_by("-created_at")[:50] if alert_visible(user, a)][:10]
    return {
        "rows": bot_rows(),
        "feed": list(reversed(feed)),
        "alerts": alerts,
        "cursor": last,
        "halt_reason": global_halt_reason(),
    }
