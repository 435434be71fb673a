"""Live events about a bot's configuration and lifecycle (the trading app publishes orders and fills)."""

from __future__ import annotations

from apps.bots.models import Bot
from apps.events.services import publish


def bot_state(bot_id: int) -> None:
    row = (
        Bot.objects.filter(pk=bot_id)
        .values("name", "desired_state", "observed_state", "halted", "halt_kind", "halt_reason")
        .first()
    )
    if row is not None:
        publish(kind="bot_state", bot_id=bot_id, data=dict(row))
