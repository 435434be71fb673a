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


class AuditCheckpoint(models.Model):
    """A signed statement "the log's entry #seq has hash H", made by the control worker.

    The signature is a Vault transit signature (key `audit-checkpoint`, which never leaves
    Vault) over `apps.audit.chain.checkpoint_message`. The same checkpoint is appended to a
    file outside the database (settings.AUDIT_CHECKPOINT_FILE), so that a database rolled back
    to an earlier state no longer matches the file. Append-only, like the log.
    """

    seq = models.BigIntegerField(unique=True)
    entry_hash = models.CharField(max_length=64)
    signed_at = models.DateTimeField()
    signature = models.CharField(max_length=200)

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"checkpoint #{self.seq}"


class AuditVerification(models.Model):
    """The outcome of one verification run: what the audit page's banner reports."""

    class Scope(models.TextChoices):
        FULL = "full", "Whole log"
        CHECKPOINT = "checkpoint", "Since the last checkpoint"

    class Status(models.TextChoices):
        OK = "ok", "Verified"
        BROKEN = "broken", "Broken"
        # Verification could not finish (e.g. Vault unreachable): says nothing about tampering.
        ERROR = "error", "Could not complete"

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(db_index=True)
    scope = models.CharField(max_length=10, choices=Scope.choices)
    status = models.CharField(max_length=6, choices=Status.choices)
    source = models.CharField(max_length=150)
    entries_checked = models.BigIntegerField(default=0)
    last_seq = models.BigIntegerField(default=0)
    checkpoints_checked = models.IntegerField(default=0)
    last_checkpoint_seq = models.BigIntegerField(null=True, blank=True)
    broken_seq = models.BigIntegerField(null=True, blank=True)
    problems = models.JSONField(default=list)  # [{"seq": int | None, "message": str}], first = lowest seq

    class Meta:
        ordering = ["-finished_at"]

    def __str__(self) -> str:
        return f"{self.scope} verification {self.status} at {self.finished_at:%Y-%m-%d %H:%M:%S}"

    @property
    def reason(self) -> str:
        return str(self.problems[0]["message"]) if self.problems else ""
