"""The global trading halt: one database row that the order gate reads before every order.

`place_order` holds a share lock on the row while it checks the gate and sends the order, and
`global_halt_set` updates the row: so once `global_halt_set` has returned, no order is in flight
anywhere and every later order is refused. The kill switch builds on this.

Setting the halt never fails because of its reason (cleaned and cut to the column) nor because its
audit entry fails (written in a savepoint: the halt commits anyway and the failure is logged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from apps.alerts.models import Alert
from apps.alerts.services import alert_raise
from apps.audit.services import record
from apps.bots.events import bot_state
from apps.bots.models import Bot, TradingHalt
from apps.bots.wakeup import halt_notify
from apps.core.text import json_safe, reason_clean

logger = logging.getLogger(__name__)
REASON_MAX = 300  # TradingHalt.reason


def _ensure_row() -> None:
    # The migration inserts the row; a flushed test database may have lost it.
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TradingHalt._meta.db_table} (id, active, reason, updated_at) "  # noqa: S608 - our table name  # nosec B608
            "VALUES (%s, false, '', now()) ON CONFLICT (id) DO NOTHING",
            [TradingHalt.SINGLETON_PK],
        )


def global_halt_active() -> bool:
    """Whether trading is halted everywhere, read from the database now (never cached)."""
    return TradingHalt.objects.filter(pk=TradingHalt.SINGLETON_PK, active=True).exists()


def global_halt_state() -> TradingHalt:
    _ensure_row()
    return TradingHalt.objects.get(pk=TradingHalt.SINGLETON_PK)


def global_halt_lock_shared() -> tuple[bool, str]:
    """Inside a transaction: read the halt flag with a share lock held until commit. Returns (active, reason)."""
    sql = f"SELECT active, reason FROM {TradingHalt._meta.db_table} WHERE id = %s FOR SHARE"  # noqa: S608  # nosec B608
    with connection.cursor() as cursor:
        cursor.execute(sql, [TradingHalt.SINGLETON_PK])
        row = cursor.fetchone()
        if row is None:
            _ensure_row()
            cursor.execute(sql, [TradingHalt.SINGLETON_PK])
            row = cursor.fetchone()
    return bool(row[0]), str(row[1])


def global_halt_lock() -> TradingHalt:
    """Inside a transaction: the halt row, locked for update until commit (waits for orders in flight)."""
    _ensure_row()
    return TradingHalt.objects.select_for_update().get(pk=TradingHalt.SINGLETON_PK)


def global_halt_set(*, reason: str, actor: AbstractBaseUser | str) -> TradingHalt:
    """Halt all trading. Waits for orders in flight to finish; none can start afterwards.

    A halt already active keeps its first reason and time: a second press adds nothing to undo.
    """
    with transaction.atomic():
        halt = global_halt_lock()
        was_active = halt.active
        if not was_active:
            halt.reason = reason_clean(reason, max_length=REASON_MAX)
        halt.active = True
        halt.since = halt.since if was_active and halt.since else timezone.now()
        halt.save()
        halt_notify("all")  # the fleet supervisors stop their workers at once, on commit
        try:
            with transaction.atomic():  # a savepoint: the halt commits even if its audit entry cannot
                record(
                    actor=actor,
                    action="trading.halted",
                    target=halt,
                    data={"reason": halt.reason, "was_active": was_active},
                )
        except Exception:
            logger.exception("trading halted, but its audit entry was not written")
    return halt


def global_halt_clear(*, actor: AbstractBaseUser | str) -> TradingHalt:
    with transaction.atomic():
        halt = global_halt_lock()
        before = halt.reason
        halt.active, halt.reason, halt.since = False, "", None
        halt.save()
        record(actor=actor, action="trading.resumed", target=halt, data={"previous_reason": before})
    return halt


def actor_of(bot: Bot) -> str:
    return f"system:bot-{bot.pk}"


def _savepoint(what: str, bot: Bot, fn: Callable[[], object]) -> None:
    # What follows a halt must never undo it: each in its own savepoint, a failure logged.
    try:
        with transaction.atomic():
            fn()
    except Exception:
        logger.exception("bot %s halted, but its %s failed", bot.pk, what)


def bot_halt(
    *,
    bot: Bot,
    reason: str,
    message: str,
    kind: str = Bot.HaltKind.BREAKER,
    by: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Halt one bot and tell it to stop; then audit entry, live event and critical alert.

    `kind` and `by` say what halted it (a breaker, the gate, a person), `data` the figures that
    tripped it; all shown on the bot page until an admin clears the halt. The halt and the stop
    are written first and stay even if the audit entry or the alert fails. A bot already halted
    keeps its first halt: the first reason is the one to clear.
    """
    text = reason_clean(f"Bot {bot.name} halted: {message}", max_length=300)
    figures = json_safe({"reason": reason, **(data or {})})
    who = (by or actor_of(bot))[:150]
    with transaction.atomic():
        changed = Bot.objects.filter(pk=bot.pk, halted=False).update(
            halted=True,
            halt_reason=text,
            halt_kind=kind,
            halted_by=who,
            halted_at=timezone.now(),
            halt_data=figures,
            desired_state=Bot.Desired.STOPPED,
        )
        bot.halted, bot.halt_reason, bot.desired_state = True, text, Bot.Desired.STOPPED
        if changed:
            halt_notify(f"bot {bot.pk}")
            audit = {"reason": reason, "message": message, "kind": kind, "by": who, "figures": figures}
            _savepoint(
                "audit entry", bot, lambda: record(actor=actor_of(bot), action="bot.halted", target=bot, data=audit)
            )
            _savepoint("live event", bot, lambda: bot_state(bot.pk))
            _savepoint(
                "alert",
                bot,
                lambda: alert_raise(
                    kind="circuit_breaker",
                    severity=Alert.Severity.CRITICAL,
                    message=text,
                    target=bot,
                    data={"bot": bot.pk, "reason": reason},
                    source=actor_of(bot),
                ),
            )


def halt_of(bot: Bot) -> dict[str, Any] | None:
    """What the bot page and the dashboard show of a bot's halt; None when it is not halted."""
    if not bot.halted:
        return None
    figures = {k.replace("_", " "): v for k, v in (bot.halt_data or {}).items() if k != "reason"}
    return {
        "reason": bot.halt_reason,
        "kind": bot.get_halt_kind_display() if bot.halt_kind else "Halt",
        "by": bot.halted_by or "unknown",
        "at": bot.halted_at,
        "figures": figures,
    }


def bot_halt_lift(*, bot: Bot, actor: AbstractBaseUser, reason: str, data: dict[str, Any]) -> bool:
    """Inside the caller's transaction: clear the bot's halt (it stays stopped) and audit it.

    Returns False when the bot was not halted (a second clear, or a race with another admin).
    The caller checks who may clear and whether the halt's condition still holds.
    """
    locked = Bot.objects.select_for_update().filter(pk=bot.pk).first()
    if locked is None or not locked.halted:
        return False
    previous = {
        "reason": locked.halt_reason,
        "kind": locked.halt_kind,
        "by": locked.halted_by,
        "at": locked.halted_at.isoformat() if locked.halted_at else None,
        "figures": locked.halt_data,
    }
    Bot.objects.filter(pk=bot.pk).update(
        halted=False, halt_reason="", halt_kind="", halted_by="", halted_at=None, halt_data={}
    )
    record(
        actor=actor,
        action="bot.halt_cleared",
        target=bot,
        data={"reason": reason, "previous": previous, **data},
    )
    bot_state(bot.pk)
    bot.refresh_from_db()
    return True


def global_halt_reason() -> str | None:
    """Why every bot is halted (the kill switch), read from the database; None when trading may run."""
    halt = global_halt_state()
    return (halt.reason or "halted") if halt.active else None
