"""Alerts raised on what the floors below announce: a lockout (django-axes), a tampered audit log and an audit
checkpoint that could not be written."""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.dispatch import receiver
from django.http import HttpRequest

from apps.alerts.services import alert_raise
from apps.audit.models import AuditVerification
from apps.audit.signals import checkpoint_failed, tampering_found
from apps.core.net import client_ip

AUDIT_TAMPERED = "audit_tampered"
AUDIT_CHECKPOINT_FAILED = "audit_checkpoint_failed"


@receiver(user_locked_out)
def alert_on_lockout(
    sender: Any, request: HttpRequest | None, username: str | None, ip_address: str | None, **kwargs: Any
) -> None:
    ip = client_ip(request) if request is not None else ip_address
    # Already mailed by the accounts app (to the admins and the user); the alert adds the history and the webhook.
    alert_raise(
        kind="login_locked_out",
        source="system:auth",
        mail=False,
        data={"username": username or "", "ip": ip},
        message=f"Account {username or '?'!r} locked after repeated failed sign-ins from {ip or 'unknown'}.",
    )


@receiver(tampering_found)
def alert_on_tampering(
    sender: Any, verification: AuditVerification, message: str, data: dict[str, Any], **kwargs: Any
) -> None:
    alert_raise(kind=AUDIT_TAMPERED, severity="critical", target=verification, message=message, data=data)


@receiver(checkpoint_failed)
def alert_on_checkpoint_failure(
    sender: Any, verification: AuditVerification, message: str, data: dict[str, Any], **kwargs: Any
) -> None:
    alert_raise(kind=AUDIT_CHECKPOINT_FAILED, severity="critical", target=verification, message=message, data=data)
