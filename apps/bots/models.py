from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, validate_slug
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.core.input_validation import NoBidiControls, NoControlCharacters
from apps.exchanges.models import ExchangeAccount
from apps.strategies import REGISTRY

DEFAULT_HOST = "local"
# Business ranges of a bot's settings (the form says them; the model's validators repeat them).
# Money is in the quote currency: a billion is beyond any order this console should ever send,
# and well inside the columns (20 digits, 8 decimal places).
MONEY_MAX = Decimal("1000000000")
TICK_INTERVAL_MAX_S = 86400
MAX_OPEN_ORDERS_MAX = 1000
MAX_ORDERS_PER_MINUTE_MAX = 600
SIZE_ANOMALY_FACTOR_MIN, SIZE_ANOMALY_FACTOR_MAX = Decimal("1"), Decimal("1000")
MONEY = [MinValueValidator(Decimal("0.00000001")), MaxValueValidator(MONEY_MAX)]


def bot_queue(bot_id: int) -> str:
    """The Celery queue of a bot's worker (its ticks), known without reading the bot."""
    return f"bot.{bot_id}"


class Bot(models.Model):
    """A configured trading bot. Its worker runs on Celery queue `bot.<id>` with its own Vault identity.

    `desired_state` is what operators ask for; `observed_state` is what the fleet supervisor and the
    worker report. Risk limits are enforced by the order gate (apps.trading) on every order.
    """

    class Mode(models.TextChoices):
        PAPER = "paper", "Paper (simulated fills, no key used)"
        LIVE = "live", "Live (real orders with the account's key)"

    class Desired(models.TextChoices):
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"

    class HaltKind(models.TextChoices):
        BREAKER = "breaker", "Circuit breaker"
        GATE = "gate", "Order gate"
        EMERGENCY = "emergency", "Emergency stop"
        KILL = "kill", "Kill switch"

    class Observed(models.TextChoices):
        STOPPED = "stopped", "Stopped"
        STARTING = "starting", "Starting"
        RUNNING = "running", "Running"
        STOPPING = "stopping", "Stopping"
        HALTED = "halted", "Halted"
        ERROR = "error", "Error"

    name = models.CharField(max_length=100, unique=True, validators=[NoControlCharacters(), NoBidiControls()])
    account = models.ForeignKey(ExchangeAccount, on_delete=models.PROTECT, related_name="bots")
    strategy = models.CharField(max_length=30, choices=[(k, s.name) for k, s in REGISTRY.items()])
    params = models.JSONField(default=dict)
    symbols = models.JSONField(default=list)  # unified ccxt symbols, e.g. ["BTC/USDT"]
    mode = models.CharField(max_length=5, choices=Mode.choices, default=Mode.PAPER)
    paper_balance = models.DecimalField(max_digits=20, decimal_places=8, default=Decimal("10000"), validators=MONEY)
    tick_interval_s = models.PositiveIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(TICK_INTERVAL_MAX_S)]
    )

    # Risk limits (quote currency unless noted).
    max_order_notional = models.DecimalField(max_digits=20, decimal_places=8, validators=MONEY)
    max_position_notional = models.DecimalField(max_digits=20, decimal_places=8, validators=MONEY)
    max_open_orders = models.PositiveIntegerField(
        default=20, validators=[MinValueValidator(1), MaxValueValidator(MAX_OPEN_ORDERS_MAX)]
    )
    max_orders_per_minute = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(MAX_ORDERS_PER_MINUTE_MAX)]
    )
    daily_loss_limit = models.DecimalField(max_digits=20, decimal_places=8, validators=MONEY)
    # A percentage of the peak: more than 0, at most 100.
    max_drawdown_pct = models.DecimalField(
        max_digits=6, decimal_places=2, validators=[MinValueValidator(Decimal("0.01")), MaxValueValidator(100)]
    )
    size_anomaly_factor = models.DecimalField(
        max_digits=6,
        decimal_places=2,
        default=Decimal("10"),
        validators=[MinValueValidator(SIZE_ANOMALY_FACTOR_MIN), MaxValueValidator(SIZE_ANOMALY_FACTOR_MAX)],
    )

    # Which fleet supervisor runs this bot's worker: the one started with this host label
    # (FLEET_HOST_LABEL). Changed only while the bot is stopped, so two hosts never run it at once.
    host = models.CharField(max_length=50, default=DEFAULT_HOST, validators=[validate_slug])

    desired_state = models.CharField(max_length=10, choices=Desired.choices, default=Desired.STOPPED)
    observed_state = models.CharField(max_length=10, choices=Observed.choices, default=Observed.STOPPED)
    halted = models.BooleanField(default=False)
    halt_reason = models.CharField(max_length=300, blank=True)
    # Who or what halted the bot (a breaker, the gate, a person's emergency stop), when, and the
    # figures that tripped it: shown on the bot page and the dashboard, cleared by an admin.
    halt_kind = models.CharField(max_length=20, choices=HaltKind.choices, blank=True)
    halted_by = models.CharField(max_length=150, blank=True)
    halted_at = models.DateTimeField(null=True, blank=True)
    halt_data = models.JSONField(default=dict, blank=True)
    # Archived bots are kept for the audit log and the reviews, out of lists, starts and kills.
    archived_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    # The accessor of the running worker's Vault token (never the token: an accessor can only look
    # up or revoke it). The worker writes it at bootstrap; the kill switch revokes by it without Redis.
    vault_token_accessor = models.CharField(max_length=100, blank=True, editable=False)
    strategy_state = models.JSONField(default=dict)
    # Set by an admin beforehand (with step-up, audited): when the kill switch fires, after every order is
    # cancelled, the kill market-sells this live bot's base position on its symbols. Off by default.
    flatten_on_kill = models.BooleanField(default=False, editable=False)

    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        return bot_queue(self.pk)

    @property
    def vault_role(self) -> str:
        return f"bot-{self.pk}"


class FleetHost(models.Model):
    """A fleet supervisor that has reported in: its host label, where it runs, and when it last did."""

    label = models.CharField(max_length=50, unique=True, validators=[validate_slug])
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["label"]

    def __str__(self) -> str:
        return f"fleet host {self.label} ({self.hostname})"


class TradingHalt(models.Model):
    """The global halt: a single row (pk=1). The gate reads it from the database before every order."""

    SINGLETON_PK = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_PK)
    active = models.BooleanField(default=False)
    reason = models.CharField(max_length=300, blank=True)
    since = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "trading_tradinghalt"  # the table it had when the trading app held it
        constraints = [models.CheckConstraint(condition=Q(id=1), name="trading_halt_singleton")]

    def __str__(self) -> str:
        return f"halt active={self.active}"
