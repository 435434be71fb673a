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
from apps.alerts.models import Alert
from apps.alerts.selectors import ADMIN_ALERTS, alert_webhook_active
from apps.audit.services import Target, record
from apps.events.services import publish

logger = logging.getLogger(__name__)


def alert_raise(
    *,
    kind: str,
    message: str,
    severity: str = Alert.Severity.WARNING,
    target: Target = None,
    data: dict[str, Any] | None = None,
    source: str = "system:control-worker",
    mail: bool = True,
) -> Alert:
    # An outbox row: the control worker posts it to the webhook (with or without the broker).
    pending = alert_webhook_active()
    alert = Alert.objects.create(
        kind=kind,
        severity=severity,
        message=message,
        data=data or {},
        webhook_status=Alert.WebhookStatus.PENDING if pending else Alert.WebhookStatus.NONE,
        webhook_next_at=timezone.now() if pending else None,
    )
    record(
        actor=source,
        action=f"alert.{kind}",
        target=target,
        data={"alert": alert.pk, "message": message, **(data or {})},
    )
    # Security alerts (keys, logins, foreign orders) go to admins only; trading ones to every viewer.
    audience = "admin" if kind in ADMIN_ALERTS else "all"
    publish(
        kind="alert",
        bot_id=None,
        data={"id": alert.pk, "kind": kind, "severity": severity, "message": message, "audience": audience},
    )
    recipients = admin_emails()
    logger.warning("alert %s: %s", kind, message)
    if mail and recipients:
        send_mail(f"[botconsole] {severity.upper()}: {message[:120]}", message, settings.DEFAULT_FROM_EMAIL, recipients)
    return alert
