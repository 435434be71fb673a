"""The alert webhook: its settings (admins, web process) and the delivery outbox (control worker).

Every alert raised while the webhook is on is stored as pending. The control worker's database
poller (apps.killswitch.tasks) hands due alerts to a sender thread every second, with or without
the broker; a failed delivery is retried with exponential backoff a bounded number of times and
then marked failed. Delivery is at least once: receivers should de-duplicate by alert id.

The signing secret is written to Vault with the web token (create/update only, no read) and read
only by the control worker. It never reaches the database, a task argument, a log line or a page.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from apps.accounts.models import User
from apps.alerts import sender as webhooks
from apps.alerts.models import Alert, AlertWebhook
from apps.alerts.selectors import TEST_KIND, alert_webhook_active, alert_webhook_get
from apps.alerts.services import alert_raise
from apps.audit.services import record
from apps.core.exceptions import ApplicationError
from apps.vault import client as vault

logger = logging.getLogger(__name__)

# kv/data/alert-webhook/signing: the web policy may write it, the control policy read it.
SECRET_PATH = "alert-webhook/signing"  # noqa: S105 - a Vault path, not a secret
SECRET_MIN_LENGTH = 16
URL_MAX_LENGTH = 500  # AlertWebhook.url
MANAGE = "accounts.manage_users"
BATCH = 50
Status = Alert.WebhookStatus


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def timeout_s() -> float:
    return _setting("ALERT_WEBHOOK_TIMEOUT_S", 5.0)


def max_attempts() -> int:
    return int(_setting("ALERT_WEBHOOK_MAX_ATTEMPTS", 6))


def backoff_s(attempts: int) -> float:
    """The wait after the n-th failed attempt: 2, 4, 8, 16, 32 s by default (about a minute in all)."""
    return _setting("ALERT_WEBHOOK_BACKOFF_S", 2.0) * float(2 ** (attempts - 1))


# -- settings (web process, admins) ------------------------------------------------------------------


def _check_admin(actor: User) -> None:
    if not actor.has_perm(MANAGE):
        raise ApplicationError("Only an admin can change the alert webhook.")


def _state(config: AlertWebhook) -> dict[str, Any]:
    return {"url": config.url, "enabled": config.enabled, "secret_set": config.secret_set_at is not None}


def alert_webhook_configure(
    *,
    url: str,
    secret: str,
    actor: User,
    request: HttpRequest | None = None,
    process_vault: vault.ProcessVault | None = None,
) -> AlertWebhook:
    """Set or replace the webhook's URL and (when given) its signing secret, and switch it on."""
    _check_admin(actor)
    url = url.strip()
    if not webhooks.url_is_valid(url):
        raise ApplicationError("Give a full http:// or https:// address, e.g. https://alerts.example.com/botconsole.")
    if len(url) > URL_MAX_LENGTH:
        raise ApplicationError("That address is too long (500 characters at most).")
    with transaction.atomic():
        AlertWebhook.objects.get_or_create(pk=1)
        config = AlertWebhook.objects.select_for_update().get(pk=1)
        if not secret and config.secret_set_at is None:
            raise ApplicationError("Set a signing secret: receivers use it to check that an alert comes from here.")
        if secret and (len(secret) < SECRET_MIN_LENGTH or secret != secret.strip()):
            raise ApplicationError(
                f"The signing secret must have at least {SECRET_MIN_LENGTH} characters and no leading or trailing "
                "spaces; a long random string is best."
            )
        before = _state(config)
        if secret:
            try:
                config.secret_version = (process_vault or vault.from_settings()).kv_write(
                    SECRET_PATH, {"secret": secret}
                )
            except vault.VaultError as exc:
                raise ApplicationError(f"The secret could not be stored ({exc}); nothing was changed.") from None
            config.secret_set_at = timezone.now()
        config.url, config.enabled, config.updated_by = url, True, actor
        config.save()
        record(
            actor=actor,
            action="alert_webhook.configured",
            target=config,
            request=request,
            data={
                "before": before,
                "after": _state(config),
                "secret_replaced": bool(secret),
                "kv_version": config.secret_version,
            },
        )
    return config


def alert_webhook_disable(*, actor: User, request: HttpRequest | None = None) -> AlertWebhook:
    """Stop posting alerts; alerts still waiting are not sent. The URL and secret stay for later."""
    _check_admin(actor)
    with transaction.atomic():
        config = AlertWebhook.objects.select_for_update().filter(pk=1).first()
        if config is None or not config.enabled:
            raise ApplicationError("The webhook is already off.")
        config.enabled, config.updated_by = False, actor
        config.save()
        record(actor=actor, action="alert_webhook.disabled", target=config, request=request, data=_state(config))
    return config


def alert_webhook_test(*, actor: User, request: HttpRequest | None = None) -> Alert:
    """Raise a harmless alert, to see it arrive at the receiver (and in the admins' mail)."""
    _check_admin(actor)
    if not alert_webhook_active():
        raise ApplicationError("Set up the webhook first.")
    with transaction.atomic():
        record(actor=actor, action="alert_webhook.test_requested", target=alert_webhook_get(), request=request)
        return alert_raise(
            kind=TEST_KIND,
            severity=Alert.Severity.WARNING,
            source="system:alerts",
            message=f"Test alert requested by {actor.get_username()}: the alert webhook works.",
            data={"requested_by": actor.get_username()},
        )


# -- delivery (control worker) -------------------------------------------------------------------------


def payload(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.pk,
        "kind": alert.kind,
        "severity": alert.severity,
        "message": alert.message,
        "created_at": alert.created_at.isoformat(),
        "data": alert.data,
    }


def _claim(alert_id: int) -> Alert | None:
    """Take one due alert for delivery; its next attempt is pushed past this one (a lease).

    Skips rows another sender holds, and if this process dies mid-delivery the alert comes due
    again when the lease ends.
    """
    with transaction.atomic():
        alert = (
            Alert.objects.select_for_update(skip_locked=True)
            .filter(pk=alert_id, webhook_status=Status.PENDING, webhook_next_at__lte=timezone.now())
            .first()
        )
        if alert is None:
            return None
        alert.webhook_attempts += 1
        alert.webhook_next_at = timezone.now() + timedelta(seconds=timeout_s() + 30)
        alert.save(update_fields=["webhook_attempts", "webhook_next_at"])
    return alert


def _read_secret(process_vault: vault.ProcessVault | None) -> str:
    try:
        secret = str((process_vault or vault.from_settings()).kv_read(SECRET_PATH).get("secret") or "")
    except vault.VaultError as exc:
        raise webhooks.WebhookFailed(f"signing secret unavailable ({exc})") from None
    if not secret:
        raise webhooks.WebhookFailed("no signing secret in Vault")
    return secret


def _deliver(alert: Alert, url: str, secret: str | webhooks.WebhookFailed) -> bool:
    try:
        if isinstance(secret, webhooks.WebhookFailed):
            raise secret
        webhooks.post(url=url, secret=secret, body=webhooks.body_bytes(payload(alert)), timeout_s=timeout_s())
    except webhooks.WebhookFailed as exc:
        alert.webhook_last_error = exc.message[:300]
        if alert.webhook_attempts >= max_attempts():
            alert.webhook_status, alert.webhook_next_at = Status.FAILED, None
            # Logged, never alerted: an alert about a failed alert could only fail the same way.
            logger.error(
                "alert %s: webhook delivery to %s failed after %d attempts: %s",
                alert.pk,
                webhooks.url_host(url),
                alert.webhook_attempts,
                exc.message,
            )
        else:
            alert.webhook_next_at = timezone.now() + timedelta(seconds=backoff_s(alert.webhook_attempts))
            logger.warning(
                "alert %s: webhook delivery to %s failed (attempt %d of %d): %s",
                alert.pk,
                webhooks.url_host(url),
                alert.webhook_attempts,
                max_attempts(),
                exc.message,
            )
        sent = False
    else:
        alert.webhook_status, alert.webhook_next_at = Status.SENT, None
        alert.webhook_delivered_at, alert.webhook_last_error = timezone.now(), ""
        sent = True
    alert.save(update_fields=["webhook_status", "webhook_next_at", "webhook_delivered_at", "webhook_last_error"])
    return sent


def webhook_deliver_pending(*, process_vault: vault.ProcessVault | None = None, limit: int = BATCH) -> int:
    """Post every due alert once (oldest first); returns how many were delivered.

    Never waits for a backoff: an alert whose attempt failed comes due again later.
    """
    config = AlertWebhook.objects.filter(pk=1).first()
    if config is None or not config.active:
        # Switched off: what was still waiting is not sent (the page shows why).
        Alert.objects.filter(webhook_status=Status.PENDING).update(
            webhook_status=Status.NONE, webhook_next_at=None, webhook_last_error="webhook switched off before delivery"
        )
        return 0
    due = list(
        Alert.objects.filter(webhook_status=Status.PENDING, webhook_next_at__lte=timezone.now())
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    if not due:
        return 0
    secret: str | webhooks.WebhookFailed
    try:
        secret = _read_secret(process_vault)
    except webhooks.WebhookFailed as exc:
        secret = exc  # counts as a failed attempt of each due alert: bounded, and shown on the page
    delivered = 0
    for alert_id in due:
        alert = _claim(alert_id)
        if alert is not None:
            delivered += _deliver(alert, config.url, secret)
    return delivered


_sender: threading.Thread | None = None
_sender_lock = threading.Lock()


def _send_in_background() -> None:
    try:
        webhook_deliver_pending()
    except Exception:  # the poller starts a new round within a second
        logger.exception("alert webhook: a delivery round failed")
    finally:
        connection.close()  # this thread's own connection


def webhook_deliver_start() -> bool:
    """Called by the control worker's poller every second: start a sender thread if alerts are due.

    The poller also executes pending kills, so it must never wait on a slow receiver; one sender
    thread at a time does the posting. Returns whether a round was started.
    """
    global _sender
    with _sender_lock:
        if _sender is not None and _sender.is_alive():
            return False
        if not Alert.objects.filter(webhook_status=Status.PENDING, webhook_next_at__lte=timezone.now()).exists():
            return False
        _sender = threading.Thread(target=_send_in_background, name="alert-webhook-sender", daemon=True)
        _sender.start()
        return True
