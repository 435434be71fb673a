"""The global trading halt: one database row that the order gate reads before every order.

`place_order` holds a share lock on the row while it checks the gate and sends the order, and
`global_halt_set` updates the row: so once `global_halt_set` has returned, no order is in flight
anywhere and every later order is refused. The kill switch builds on this.

Setting the halt never fails because of its reason (cleaned and cut to the column) nor because its
audit entry fails (written in a savepoint: the halt commits anyway and the failure is logged).
"""

from __future__ import annotations

import logging

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.services import record
from apps.bots.models import TradingHalt
from apps.killswitch.text import reason_clean

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
