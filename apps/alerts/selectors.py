"""Reading alerts and the webhook's settings."""

from __future__ import annotations

from django.db.models import Case, QuerySet, Value, When

from apps.accounts.models import User
from apps.alerts.models import Alert, AlertWebhook

TEST_KIND = "webhook_test"
# Security alerts (keys, logins, foreign orders, balances) are for admins; trading ones for every viewer.
ADMIN_ALERTS = frozenset({"key_check_failed", "login_locked_out", "foreign_order", "balance_mismatch", TEST_KIND})
ADMIN_PERM = "accounts.manage_exchange_accounts"
ALERT_LIST_LIMIT = 200


def alert_webhook_get() -> AlertWebhook:
    """The webhook's settings (an unsaved, switched-off row until an admin sets it up)."""
    return AlertWebhook.objects.filter(pk=1).first() or AlertWebhook(pk=1)


def alert_webhook_active() -> bool:
    return AlertWebhook.objects.filter(pk=1, enabled=True, secret_set_at__isnull=False).exclude(url="").exists()


def alert_visible(user: User, alert: Alert) -> bool:
    """The rule of the alerts page and of live alert events: security alerts are for admins."""
    return alert.kind not in ADMIN_ALERTS or bool(user.has_perm(ADMIN_PERM))


def alerts_visible(user: User) -> QuerySet[Alert]:
    """Every alert `user` may see (the same rule as alert_visible, as a query)."""
    alerts = Alert.objects.all()
    if not user.has_perm(ADMIN_PERM):
        alerts = alerts.exclude(kind__in=ADMIN_ALERTS)
    return alerts


def alerts_for(user: User, limit: int = ALERT_LIST_LIMIT) -> QuerySet[Alert]:
    """The alerts page: unacknowledged ones first, then the newest."""
    alerts = alerts_visible(user).select_related("acknowledged_by")
    unacknowledged_first = Case(When(acknowledged_at__isnull=True, then=Value(0)), default=Value(1))
    return alerts.order_by(unacknowledged_first, "-created_at", "-pk")[:limit]


def alert_unacknowledged_count(user: User) -> int:
    """How many alerts `user` may see that nobody has acknowledged (one COUNT, on a partial index)."""
    return alerts_visible(user).filter(acknowledged_at__isnull=True).count()
