from datetime import timedelta

from django.db import models

# A run still "running" this long after it was claimed (or last taken over) is given up: presses no longer
# join it, a resume no longer waits for it, and the poller marks it failed, unverified.
RUN_ABANDONED_AFTER = timedelta(minutes=10)
# The executor of a run (a control worker's poller or task, `manage.py killswitch`) renews its lease every
# RUN_HEARTBEAT_EVERY; a run whose lease is older than RUN_LEASE lost its executor (killed, frozen, cut off
# from the database) and is taken over by the next poller and executed again from the start: every step is
# idempotent (what is revoked or cancelled already counts as done). After RUN_MAX_ATTEMPTS executors lost, the
# run is marked failed instead.
RUN_HEARTBEAT_EVERY = timedelta(seconds=1)
RUN_LEASE = timedelta(seconds=5)
RUN_MAX_ATTEMPTS = 3


class KillRun(models.Model):
    """One press of the kill switch (or of a per-bot stop), and its report.

    The halt flag is committed before this row exists: from then on the order gate refuses every
    order. The control worker (or `manage.py killswitch`) then executes the run and fills the report.
    Presses made while a run of their scope is pending or running join it (audited as such).
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
    # Of orders_cancelled, the paper bots' simulated orders (cancelled in the database, never on an exchange).
    paper_orders_cancelled = models.PositiveIntegerField(default=0)
    workers_stopped = models.PositiveIntegerField(default=0)
    # True when the count above is not a verified figure: an account did not answer, or the final
    # check could not follow every worker's exit (a worker still alive might have ordered after it).
    open_unknown = models.BooleanField(default=False)
    balances_after = models.JSONField(default=dict)
    problems = models.JSONField(default=list)
    # The bots this press told to stop (they wanted to run): a resume offers to start them again.
    bots_stopped = models.JSONField(default=list)
    # The executor's lease: who executes the run (host and pid), its claim (every write of the report is made
    # under it, so an executor that lost the run changes nothing) and its last heartbeat.
    executor = models.CharField(max_length=120, blank=True)
    claim = models.CharField(max_length=32, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Each takeover: {"at", "by", "from", "last_heartbeat", "steps_done", "orders_cancelled", ...}.
    takeovers = models.JSONField(default=list)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"kill #{self.pk} ({self.scope}, {self.status})"

    @property
    def takeover_lines(self) -> list[str]:
        """Each time the run lost its executor and was taken over, in a sentence (the report page shows them)."""
        lines = []
        for note in self.takeovers:
            done = ", ".join(note.get("steps_done") or []) or "none"
            lines.append(
                f"Interrupted: the process executing this run ({note.get('from') or 'unknown'}) stopped answering "
                f"after its last heartbeat at {str(note.get('last_heartbeat', '?'))[11:19]} UTC (steps finished: "
                f"{done}). Taken over at {str(note.get('at', '?'))[11:19]} UTC by {note.get('by')} and "
                "executed again from the start."
            )
        return lines

    @property
    def still_open_text(self) -> str:
        """The "still open" figure as the report states it: a number only once it was verified."""
        if self.status in (self.Status.PENDING, self.Status.RUNNING):
            return "not checked yet"
        if self.open_unknown:
            return f"unknown ({self.orders_still_open} seen, not verified)"
        return str(self.orders_still_open)

    def _step_at(self, name: str) -> int | None:
        at = next((s.get("at_ms") for s in self.steps if s.get("name") == name), None)
        return int(at) if at is not None else None

    @property
    def duration_ms(self) -> int | None:
        """From the click to verified: when the verify step ended (the run's end for a run without one)."""
        if self.finished_at is None:
            return None
        verified = self._step_at("verify")
        if verified is not None:
            return verified
        return int((self.finished_at - self.created_at).total_seconds() * 1000)

    @property
    def workers_stopped_ms(self) -> int | None:
        """From the click to the fleet reporting every worker stopped (or giving up): its own figure."""
        return self._step_at("stop")


class BreakerRule(models.Model):
    """A circuit breaker checked by the control worker, and what it does when it trips.

    The order gate has its own per-order checks; these run every few seconds beside it and also
    catch what no single order shows: the fleet's loss, an order-rate spike, foreign orders, a
    key the exchange keeps rejecting, an unreachable Vault. Every trip raises an alert and is
    audited; the action then decides whether the affected bots are halted or everything is killed.
    """

    class Kind(models.TextChoices):
        BOT_DAILY_LOSS = "bot_daily_loss", "Daily loss of a bot (beyond the bot's own limit)"
        BOT_DRAWDOWN = "bot_drawdown", "Drawdown of a bot from its peak (beyond the bot's own limit)"
        FLEET_DAILY_LOSS = "fleet_daily_loss", "Daily loss across all live accounts"
        FLEET_DRAWDOWN = "fleet_drawdown", "Drawdown from peak across all live accounts"
        ORDER_RATE = "order_rate", "Order-rate spike across the fleet"
        FOREIGN_ORDERS = "foreign_orders", "Foreign orders found by reconciliation"
        AUTH_ERRORS = "auth_errors", "Repeated authentication errors from an exchange"
        VAULT_UNREACHABLE = "vault_unreachable", "Vault unreachable"

    class Action(models.TextChoices):
        ALERT = "alert", "Alert only"
        HALT_BOT = "halt_bot", "Halt the affected bots"
        KILL_ALL = "kill_all", "Kill everything"

    kind = models.CharField(max_length=20, choices=Kind.choices, unique=True)
    enabled = models.BooleanField(default=True)
    action = models.CharField(max_length=10, choices=Action.choices)
    # Meaning depends on the kind (see apps.killswitch.breaker_rules.DEFAULTS); unused by the per-bot
    # kinds, which use each bot's own limits.
    threshold = models.DecimalField(max_digits=20, decimal_places=8, null=True, blank=True)
    window_s = models.PositiveIntegerField(default=60)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind"]

    def __str__(self) -> str:
        return f"breaker {self.kind} -> {self.action}"


class BreakerTrip(models.Model):
    """One trip of a breaker for one subject ("fleet", "bot:<id>", "account:<uuid>", "vault").

    A trip stays open while its condition holds, so a condition that persists trips once; it is
    closed when the condition clears, and the next breach trips again.
    """

    kind = models.CharField(max_length=20, choices=BreakerRule.Kind.choices)
    subject = models.CharField(max_length=60)
    action = models.CharField(max_length=10, choices=BreakerRule.Action.choices)
    message = models.TextField()
    data = models.JSONField(default=dict)
    tripped_at = models.DateTimeField(auto_now_add=True, db_index=True)
    cleared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-tripped_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "subject"],
                condition=models.Q(cleared_at__isnull=True),
                name="one_open_trip_per_subject",
            )
        ]

    def __str__(self) -> str:
        return f"trip {self.kind} {self.subject}"
