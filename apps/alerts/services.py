"""Raising alerts: stored, audited, mailed to the admins and (when set up) posted to the webhook.

Never put a secret in `data`: it is stored, audited and sent to the webhook receiver.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from apps.accounts.models import User
from apps.accounts.notifications import admin_emails
from apps.alerts.models import ACK_NOTE_MAX, Alert
from apps.alerts.selectors import ADMIN_ALERTS, ALERT_LIST_LIMIT, alert_visible, alert_webhook_active, alerts_visible
from apps.audit.services import Target, record
from apps.core.exceptions import ApplicationError
from apps.core.input_validation import has_control_characters
from apps.events.services import publish

logger = logging.getLogger(__name__)


class AlertNotFoundError(ApplicationError):
    """No alert with that id, or none the user may see."""


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


@dataclass(frozen=True)
class Acknowledgement:
    """What an acknowledgement did: `alert` as stored now; `done` is False when someone had acknowledged it
    already (theirs stays: who, when and note are never overwritten)."""

    alert: Alert
    done: bool


def ack_note_problem(note: str) -> str | None:
    """Why a note cannot be stored as typed, or None when it can (the form shows the same message)."""
    if len(note) > ACK_NOTE_MAX:
        return f"Keep the note to {ACK_NOTE_MAX} characters (it has {len(note)}). Nothing was changed."
    if has_control_characters(note):
        return "The note contains a control or text-direction character; type it as plain text. Nothing was changed."
    return None


def alert_acknowledge(
    *, alert_id: int, actor: User, note: str = "", request: HttpRequest | None = None
) -> Acknowledgement:
    """Mark one alert as seen by `actor`, audited. Only an alert `actor` may see can be acknowledged
    (AlertNotFoundError otherwise, as for an unknown id: a viewer does not learn that a security alert exists)."""
    note = note.strip()
    problem = ack_note_problem(note)
    if problem is not None:
        raise ApplicationError(problem)
    with transaction.atomic():
        # Locked, so that two people acknowledging at once leave the first one's name, and one audit entry.
        alert = Alert.objects.select_for_update().filter(pk=alert_id).first()
        if alert is None or not alert_visible(actor, alert):
            raise AlertNotFoundError("There is no such alert.")
        if alert.acknowledged_at is not None:
            return Acknowledgement(alert, done=False)
        _acknowledge(alert, actor=actor, note=note, request=request, batch=False)
    return Acknowledgement(alert, done=True)


def alert_acknowledge_many(
    *, alert_ids: list[int], actor: User, note: str = "", request: HttpRequest | None = None
) -> int:
    """Acknowledge the alerts of `alert_ids` that `actor` may see and nobody has acknowledged yet (the list page's
    "acknowledge all shown"); one audit entry per alert. Returns how many were acknowledged."""
    note = note.strip()
    problem = ack_note_problem(note)
    if problem is not None:
        raise ApplicationError(problem)
    if len(alert_ids) > ALERT_LIST_LIMIT:
        raise ApplicationError(f"Acknowledge at most {ALERT_LIST_LIMIT} alerts at once. Nothing was changed.")
    done = 0
    with transaction.atomic():
        pending = alerts_visible(actor).filter(pk__in=alert_ids, acknowledged_at__isnull=True)
        for alert in pending.select_for_update().order_by("pk"):
            _acknowledge(alert, actor=actor, note=note, request=request, batch=True)
            done += 1
    return done


def _acknowledge(alert: Alert, *, actor: User, note: str, request: HttpRequest | None, batch: bool) -> None:
    alert.acknowledged_at = timezone.now()
    alert.acknowledged_by = actor
    alert.ack_note = note
    alert.save(update_fields=["acknowledged_at", "acknowledged_by", "ack_note"])
    record(
        actor=actor,
        action="alert.acknowledged",
        target=alert,
        request=request,
        data={"alert": alert.pk, "kind": alert.kind, "note": note, "all_shown": batch},
    )
