"""Raising alerts: stored, audited, mailed to the admins and (when set up) posted to the webhook.

Never put a secret in `data`: it is stored, audited and sent to the webhook receiver.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from apps.accounts.notifications import admin_emails
from apps.audit.services import Target, record
from apps.killswitch.models import Alert
from apps.killswitch.webhook_services import TEST_KIND, alert_webhook_active
from apps.live.services import publish

logger = logging.getLogger(__name__)
ADMIN_ALERTS = frozenset({"key_check_failed", "login_locked_out", "foreign_order", "balance_mismatch", TEST_KIND})


def alert_raise(
    *, kind: str, message: str, severity: str = Alert.Severity.WARNING, target: Target = None,
    data: dict[str, Any] | None = None, source: str = "system:control-worker", mail: bool = True,
) -> Alert:  # fmt: skip
    # An outbox row: the control worker posts it to the webhook (with or without the broker).
    pending = alert_webhook_active()
    alert = Alert.objects.create(
        kind=kind, severity=severity, message=message, data=data or {},
        webhook_status=Alert.WebhookStatus.PENDING if pending else Alert.WebhookStatus.NONE,
        webhook_next_at=timezone.now() if pending else None,
    )  # fmt: skip
    record(
        actor=source,
        action=f"alert.{kind}",
        target=target,
        data={"alert": alert.pk, "message": message, **(data or {})},
    )
    # Security alerts (keys, logins, foreign orders) go to admins only; trading ones to every viewer.
    audience = "admin" if kind in ADMIN_ALERTS else "all"
    publish(
        kind="alert", bot_id=None,
        data={"id": alert.pk, "kind": kind, "severity": severity, "message": message, "audience": audience},
    )  # fmt: skip
    recipients = admin_emails()
    logger.warning("alert %s: %s", kind, message)
    if mail and recipients:
        send_mail(f"[botconsole] {severity.upper()}: {message[:120]}", message, settings.DEFAULT_FROM_EMAIL, recipients)
    return alert
