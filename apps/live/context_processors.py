from typing import Any

from django.http import HttpRequest

from apps.alerts.selectors import alert_unacknowledged_count
from apps.bots.halts import global_halt_reason
from apps.core.otp import is_verified


def navigation(request: HttpRequest) -> dict[str, Any]:
    """What the page chrome needs: the role-aware menu, the unacknowledged alerts, the panic button and the halt
    banner."""
    user = getattr(request, "user", None)
    if user is None or not is_verified(user):
        return {"nav_verified": False, "nav_perms": {}}
    perms = {
        name: user.has_perm(f"accounts.{name}")
        for name in ("view_console", "manage_users", "trigger_killswitch", "resume_after_kill")
    }
    return {
        "nav_verified": True,
        "nav_perms": perms,
        "nav_halt_reason": global_halt_reason(),
        # Only for those who may open the alerts page; one COUNT on a partial index.
        "nav_alerts_unacknowledged": alert_unacknowledged_count(user) if perms["view_console"] else 0,
    }
