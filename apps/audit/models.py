from django.conf import settings
from django.db import models


class AuditEntry(models.Model):
    """One entry of the append-only, hash-chained audit log.

    `seq` is gapless (1, 2, 3, ...): it is assigned under an advisory lock from the last
    entry, never from a database sequence, so a rolled-back writer leaves no hole. `hash`
    is SHA-256 over `prev_hash` and a canonical encoding of this entry (see
    apps.audit.chain). Database triggers refuse UPDATE, DELETE and TRUNCATE.
    """

    seq = models.BigIntegerField(primary_key=True)
    created_at = models.DateTimeField()
    # Users are deactivated, never deleted; PROTECT keeps the reference valid.
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The username, or "system:<component>" for the control worker, a bot, a command...
    actor = models.CharField(max_length=150)
    ip = models.GenericIPAddressField(null=True, blank=True)
    otp_verified = models.BooleanField(default=False)
    action = models.CharField(max_length=100)
    target_type = models.CharField(max_length=100, blank=True, default="")
    target_id = models.CharField(max_length=100, blank=True, default="")
    data = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]
        indexes = [
            models.Index(fields=["action", "seq"]),
            models.Index(fields=["target_type", "target_id", "seq"]),
            models.Index(fields=["actor", "seq"]),
            models.Index(fields=["created_at"]),
        ]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} by {self.actor}"
