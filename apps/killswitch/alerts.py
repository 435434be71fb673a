"""Raising alerts: stored, audited and mailed to the admins. Never put a secret in `data`."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.mail import send_mail

from apps.accounts.notifications import admin_emails
from apps.audit.services import Target, record
from apps.killswitch.models import Alert
from apps.live.services import publish

logger = logging.getLogger(__name__)
ADMIN_ALERTS = frozenset({"key_check_failed", "login_locked_out", "foreign_order", "balance_mismatch"})


def alert_raise(
    *, kind: str, message: str, severity: str = Alert.Severity.WARNING, target: Target = None,
    data: dict[str, Any] | None = None, source: str = "system:control-worker",
) -> Alert:  # fmt: skip
    alert = Alert.objects.create(kind=kind, severity=severity, message=message, data=data or {})
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
    if recipients:
        send_mail(f"[botconsole] {severity.upper()}: {message[:120]}", message, settings.DEFAULT_FROM_EMAIL, recipients)
    return alert
