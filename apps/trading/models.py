"""Orders, fills, positions and per-bot equity; gate refusals; the global trading halt.

Amounts are Decimals with 12 decimal places: exchanges quote up to 8, and averages need a few more.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount

ZERO = Decimal(0)


class Order(models.Model):
    class Side(models.TextChoices):
        BUY = "buy", "Buy"
        SELL = "sell", "Sell"

    class Type(models.TextChoices):
        LIMIT = "limit", "Limit"
        MARKET = "market", "Market"

    class Status(models.TextChoices):
        NEW = "new", "New"
        OPEN = "open", "Open"
        PARTIALLY_FILLED = "partially_filled", "Partially filled"
        FILLED = "filled", "Filled"
        CANCELED = "canceled", "Canceled"
        REJECTED = "rejected", "Rejected"
        EXPIRED = "expired", "Expired"

    OPEN_STATUSES = (Status.NEW, Status.OPEN, Status.PARTIALLY_FILLED)

    bot = models.ForeignKey(Bot, on_delete=models.PROTECT, related_name="orders")
    # Denormalized from the bot so exchange ids can be unique per account (bots may share one).
    account = models.ForeignKey(ExchangeAccount, on_delete=models.PROTECT, related_name="+")
    symbol = models.CharField(max_length=30)
    side = models.CharField(max_length=4, choices=Side.choices)
    type = models.CharField(max_length=6, choices=Type.choices)
    amount = models.DecimalField(max_digits=28, decimal_places=12)
    price = models.DecimalField(max_digits=28, decimal_places=12, null=True, blank=True)  # null for market orders
    notional = models.DecimalField(
        max_digits=28, decimal_places=12, default=ZERO
    )  # amount x (limit or reference price) when placed
    client_order_id = models.CharField(max_length=36, unique=True)
    # NULL until the exchange acknowledges the order; the partial unique constraint skips NULLs.
    exchange_order_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    filled = models.DecimalField(max_digits=28, decimal_places=12, default=ZERO)
    average = models.DecimalField(max_digits=28, decimal_places=12, null=True, blank=True)
    intent_tag = models.CharField(max_length=64)
    generation = models.PositiveBigIntegerField(default=0)
    paper = models.BooleanField(default=False)
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "exchange_order_id"],
                condition=Q(exchange_order_id__isnull=False),
                name="order_exchange_id_unique_per_account",
            )
        ]
        indexes = [models.Index(fields=["bot", "status"]), models.Index(fields=["bot", "created_at"])]

    def __str__(self) -> str:
        return f"{self.side} {self.amount} {self.symbol} @ {self.price or 'market'} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES


class Fill(models.Model):
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="fills")
    account = models.ForeignKey(ExchangeAccount, on_delete=models.PROTECT, related_name="+")
    trade_id = models.CharField(max_length=64)
    price = models.DecimalField(max_digits=28, decimal_places=12)
    amount = models.DecimalField(max_digits=28, decimal_places=12)
    fee = models.DecimalField(max_digits=28, decimal_places=12, default=ZERO)
    fee_currency = models.CharField(max_length=16, blank=True)
    timestamp = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-timestamp", "-id"]
        constraints = [models.UniqueConstraint(fields=["account", "trade_id"], name="fill_trade_id_unique_per_account")]
        # The trade history pages by (timestamp, id): an index range, not a sort of every fill.
        indexes = [models.Index(fields=["timestamp", "id"], name="fill_time_id")]

    def __str__(self) -> str:
        return f"fill {self.trade_id}: {self.amount} @ {self.price}"


class Position(models.Model):
    """What one bot holds of one symbol's base asset, at what average entry, and what it realized."""

    bot = models.ForeignKey(Bot, on_delete=models.PROTECT, related_name="positions")
    symbol = models.CharField(max_length=30)
    base_quantity = models.DecimalField(max_digits=28, decimal_places=12, default=ZERO)
    average_entry = models.DecimalField(max_digits=28, decimal_places=12, null=True, blank=True)
    realized_pnl = models.DecimalField(max_digits=28, decimal_places=12, default=ZERO)
    fees_quote = models.DecimalField(
        max_digits=28, decimal_places=12, default=ZERO
    )  # fees paid, valued in the quote currency when paid
    last_price = models.DecimalField(max_digits=28, decimal_places=12, null=True, blank=True)
    unrealized_pnl = models.DecimalField(max_digits=28, decimal_places=12, default=ZERO)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["bot", "symbol"]
        constraints = [models.UniqueConstraint(fields=["bot", "symbol"], name="position_unique_per_bot_symbol")]

    def __str__(self) -> str:
        return f"{self.bot_id} {self.symbol}: {self.base_quantity}"


class BotLedger(models.Model):
    """Per-bot trading state: tick generation, fill cursor, paper cash and equity for the loss breakers."""

    bot = models.OneToOneField(Bot, on_delete=models.PROTECT, related_name="ledger")
    # Bumped only after a tick completes: a tick re-run after a crash reuses the same client order ids.
    generation = models.PositiveBigIntegerField(default=0)
    last_fill_ms = models.BigIntegerField(null=True, blank=True)  # exchange time of the newest stored fill
    paper_quote = models.DecimalField(
        max_digits=28, decimal_places=12, null=True, blank=True
    )  # paper cash; starts at bot.paper_balance
    peak_equity = models.DecimalField(max_digits=28, decimal_places=12, null=True, blank=True)
    day_start_equity = models.DecimalField(max_digits=28, decimal_places=12, null=True, blank=True)
    day = models.DateField(null=True, blank=True)
    last_equity = models.DecimalField(max_digits=28, decimal_places=12, null=True, blank=True)
    equity_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"ledger of bot {self.bot_id} (generation {self.generation})"


class GateRefusal(models.Model):
    class Reason(models.TextChoices):
        GLOBAL_HALT = "global_halt", "Global halt"
        BOT_HALTED = "bot_halted", "Bot halted"
        BOT_STOPPED = "bot_stopped", "Bot told to stop"
        SYMBOL = "symbol_not_allowed", "Symbol not allowed"
        ORDER_NOTIONAL = "max_order_notional", "Order too large"
        POSITION_NOTIONAL = "max_position_notional", "Position too large"
        OPEN_ORDERS = "max_open_orders", "Too many open orders"
        RATE = "max_orders_per_minute", "Order rate"
        DAILY_LOSS = "daily_loss_limit", "Daily loss limit"
        DRAWDOWN = "max_drawdown", "Drawdown from peak"
        SIZE_ANOMALY = "size_anomaly", "Size anomaly"
        INVALID = "invalid_intent", "Invalid order"

    bot = models.ForeignKey(Bot, on_delete=models.PROTECT, related_name="gate_refusals")
    symbol = models.CharField(max_length=30)
    side = models.CharField(max_length=4)
    amount = models.DecimalField(max_digits=28, decimal_places=12)
    price = models.DecimalField(max_digits=28, decimal_places=12, null=True, blank=True)
    notional = models.DecimalField(max_digits=28, decimal_places=12, null=True, blank=True)
    reason = models.CharField(max_length=30, choices=Reason.choices)
    message = models.CharField(max_length=500)
    intent_tag = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"refused {self.side} {self.amount} {self.symbol}: {self.reason}"


class BotLogLine(models.Model):
    """One log line of a bot's worker, stored after the redaction filter masked it (apps.trading.logs).

    Kept for BOT_LOG_RETENTION_DAYS, then purged by the control worker. `level` is the logging level number
    (20 INFO, 30 WARNING, ...) so "warnings and worse" is one indexed comparison.
    """

    MESSAGE_MAX = 2000

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="log_lines")
    created_at = models.DateTimeField(default=timezone.now)
    level = models.PositiveSmallIntegerField()
    logger = models.CharField(max_length=100)
    message = models.CharField(max_length=MESSAGE_MAX)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["bot", "created_at"], name="trading_botlog_bot_created"),
            models.Index(fields=["created_at"], name="trading_botlog_created"),  # the retention purge
        ]

    def __str__(self) -> str:
        return f"bot {self.bot_id} {self.level_name} {self.logger}: {self.message[:60]}"

    @property
    def level_name(self) -> str:
        return logging.getLevelName(self.level)
