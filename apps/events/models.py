"""Live events: one row per thing the dashboard shows as it happens.

The row is the source of truth; the channel layer only carries "event <seq> exists", so a
socket that missed a notification (or a page that was closed) catches up from this table.
"""

from __future__ import annotations

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone


class Event(models.Model):
    class Kind(models.TextChoices):
        ORDER_NEW = "order_new", "New order"
        ORDER_UPDATE = "order_update", "Order update"
        FILL = "fill", "Fill"
        BOT_STATE = "bot_state", "Bot state"
        HEARTBEAT = "heartbeat", "Heartbeat"
        GATE_REFUSAL = "gate_refusal", "Gate refusal"
        PNL = "pnl", "PnL"
        ALERT = "alert", "Alert"
        KILL_SWITCH = "kill_switch", "Kill switch"

    # The cursor clients resume from: monotonic, never reused.
    seq = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # SET_NULL: deleting a bot must not be blocked by, nor delete, its history.
    bot = models.ForeignKey("bots.Bot", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # DjangoJSONEncoder: callers pass Decimals and datetimes straight from models.
    payload = models.JSONField(default=dict, encoder=DjangoJSONEncoder)

    class Meta:
        db_table = "live_event"  # the table it had when the live app held it
        ordering = ["seq"]
        indexes = [models.Index(fields=["bot", "seq"], name="live_event_bot_seq")]

    def __str__(self) -> str:
        return f"event {self.seq} {self.kind}"
