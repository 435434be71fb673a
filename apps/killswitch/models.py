from django.db import models


class Alert(models.Model):
    """A security or trading alert: key hygiene failures now; kills, breakers and more later."""

    class Severity(models.TextChoices):
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=50)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    message = models.TextField()
    data = models.JSONField(default=dict)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.severity}: {self.kind}"


class KillRun(models.Model):
    """One press of the kill switch (or of a per-bot stop), and its report.

    The halt flag is committed before this row exists: from then on the order gate refuses every
    order. The control worker (or `manage.py killswitch`) then executes the run and fills the report.
    """

    class Scope(models.TextChoices):
        ALL = "all", "Every bot"
        BOT = "bot", "One bot"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Done with problems"

    scope = models.CharField(max_length=3, choices=Scope.choices)
    bot = models.ForeignKey("bots.Bot", null=True, blank=True, on_delete=models.PROTECT, related_name="kill_runs")
    reason = models.CharField(max_length=500)
    requested_by = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    requested_via = models.CharField(max_length=10, default="web")  # web, shell, breaker
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    steps = models.JSONField(default=list)  # [{"name", "ms", "detail"}], in order
    orders_cancelled = models.PositiveIntegerField(default=0)
    orders_still_open = models.PositiveIntegerField(default=0)
    balances_after = models.JSONField(default=dict)
    problems = models.JSONField(default=list)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"kill #{self.pk} ({self.scope}, {self.status})"

    @property
    def duration_ms(self) -> int | None:
        if self.finished_at is None:
            return None
        return int((self.finished_at - self.created_at).total_seconds() * 1000)
