from __future__ import annotations

from typing import Any

from django.db.models import Max

from apps.accounts.models import User


def dashboard_context(user: User) -> dict[str, Any]:
    """The dashboard: the fleet, the latest visible events (the live feed's start) and alerts."""
    from apps.bots.selectors import bot_rows, global_halt_reason
    from apps.killswitch.models import Alert
    from apps.live.models import Event
    from apps.live.selectors import visible_events

    last = Event.objects.aggregate(last=Max("seq"))["last"] or 0
    recent = visible_events(user, after=max(0, last - 300), bot_id=None, limit=500)
    feed = [e for e in recent if e.kind in ("order_new", "order_update", "fill", "gate_refusal", "kill_switch")][-30:]
    alerts = [a for a in Alert.objects.order_by("-created_at")[:50] if _alert_visible(user, a)][:10]
    return {
        "rows": bot_rows(),
        "feed": list(reversed(feed)),
        "alerts": alerts,
        "cursor": last,
        "halt_reason": global_halt_reason(),
    }


def _alert_visible(user: User, alert: Any) -> bool:
    # The same rule as live alert events: security alerts are for admins.
    from apps.killswitch.alerts import ADMIN_ALERTS

    return alert.kind not in ADMIN_ALERTS or bool(user.has_perm("accounts.manage_exchange_accounts"))
