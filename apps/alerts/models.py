"""Alerts and where they are sent."""

from django.db import models

ACK_NOTE_MAX = 500


class Alert(models.Model):
    """A security or trading alert: key hygiene failures now; kills, breakers and more later."""

    class Severity(models.TextChoices):
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    class WebhookStatus(models.TextChoices):
        NONE = "none", "Not sent (no webhook)"
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=50)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    message = models.TextField()
    data = models.JSONField(default=dict)
    # Webhook outbox: the control worker posts pending alerts (apps.alerts.webhook).
    webhook_status = models.CharField(max_length=10, choices=WebhookStatus.choices, default=WebhookStatus.NONE)
    webhook_attempts = models.PositiveSmallIntegerField(default=0)
    webhook_next_at = models.DateTimeField(null=True, blank=True)
    webhook_last_error = models.CharField(max_length=300, blank=True)
    webhook_delivered_at = models.DateTimeField(null=True, blank=True)
    # Acknowledgement: someone who may see the alert has looked at it. The first one stays (a second
    # acknowledgement changes nothing); users are deactivated, never deleted, hence PROTECT.
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        "accounts.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    ack_note = models.CharField(max_length=ACK_NOTE_MAX, blank=True)

    class Meta:
        db_table = "killswitch_alert"  # the table it had when the kill switch app held it
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["webhook_next_at"], condition=models.Q(webhook_status="pending"), name="alert_webhook_due"
            ),
            # The page chrome counts the unacknowledged alerts on every page: a small partial index.
            models.Index(
                fields=["kind"], condition=models.Q(acknowledged_at__isnull=True), name="alert_unacknowledged"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.severity}: {self.kind}"


class AlertWebhook(models.Model):
    """Where alerts are posted by webhook (a single row, pk 1).

    The signing secret lives only in Vault (the web process may write it, only the control worker
    may read it); this row says only whether and when one was set.
    """

    url = models.URLField(max_length=500, blank=True)
    enabled = models.BooleanField(default=False)
    secret_set_at = models.DateTimeField(null=True, blank=True)
    secret_version = models.PositiveIntegerField(default=0)  # the KV version written last
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        db_table = "killswitch_alertwebhook"

    def __str__(self) -> str:
        return f"alert webhook ({'on' if self.active else 'off'})"

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.url) and self.secret_set_at is not None
