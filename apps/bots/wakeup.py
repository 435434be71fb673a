"""Waking the fleet supervisor the moment trading is halted, instead of at its next poll.

A halt (the kill switch, an emergency stop, a breaker) runs `halt_notify()` inside its own
transaction: PostgreSQL delivers the notification only when that transaction commits, so a
supervisor never acts on a halt that was rolled back. The supervisor waits on its own LISTEN
connection (`Wakeup.wait`) between passes; when the notification arrives it reconciles at once
and stops the halted bots' workers. The poll stays as it was: if the LISTEN connection is down (the
database restarting), `wait` simply sleeps the poll interval and reconnects later. The channel
carries no data beyond a word; nobody may rely on it for safety (the order gate reads the halt row).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import psycopg
from django.db import connection, transaction

logger = logging.getLogger(__name__)

HALT_CHANNEL = "botconsole_halt"
RECONNECT_EVERY_S = 5.0


def halt_notify(what: str) -> None:
    """Inside the halting transaction: wake every fleet supervisor when it commits (never raises)."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:  # a savepoint: the halt commits regardless
            cursor.execute("SELECT pg_notify(%s, %s)", [HALT_CHANNEL, what[:100]])
    except Exception:
        logger.warning("halt committed without waking the fleet supervisors: they see it at their next poll")


class Wakeup:
    """A LISTEN connection of its own (not Django's), used only to sleep until a halt or the poll's end."""

    def __init__(self) -> None:
        self._conn: psycopg.Connection[Any] | None = None
        self._next_try = 0.0

    def _connect(self) -> psycopg.Connection[Any] | None:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        now = time.monotonic()
        if now < self._next_try:
            return None
        self._next_try = now + RECONNECT_EVERY_S
        try:
            params = connection.get_connection_params()
            conn = psycopg.connect(**params, autocommit=True, connect_timeout=2)
            conn.execute(f"LISTEN {HALT_CHANNEL}")
        except Exception as exc:
            logger.info("fleet: no halt notifications for now (%s); polling only", type(exc).__name__)
            return None
        self._conn = conn
        return conn

    def listen(self) -> bool:
        """Start listening now (else at the first wait); whether the connection is up."""
        return self._connect() is not None

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """Sleep until a halt is notified (True), the timeout passes or `stop` is set (False)."""
        conn = self._connect()
        if conn is None:
            stop.wait(timeout)
            return False
        try:
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                return True
        except Exception as exc:
            logger.info("fleet: halt notifications lost (%s); polling until reconnected", type(exc).__name__)
            self.close()
            stop.wait(timeout)
        return False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
