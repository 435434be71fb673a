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
# A kill run was recorded: the control workers' pollers execute it at once, without waiting for the broker.
KILL_CHANNEL = "botconsole_kill"
RECONNECT_EVERY_S = 5.0
STOP_CHECK_S = 0.5


def notify(channel: str, what: str) -> bool:
    """Inside the caller's transaction: wake the listeners of `channel` when it commits (never raises)."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:  # a savepoint: the caller commits regardless
            cursor.execute("SELECT pg_notify(%s, %s)", [channel, what[:100]])
    except Exception:
        return False
    return True


def halt_notify(what: str) -> None:
    """Inside the halting transaction: wake every fleet supervisor when it commits (never raises)."""
    if not notify(HALT_CHANNEL, what):
        logger.warning("halt committed without waking the fleet supervisors: they see it at their next poll")


class Wakeup:
    """A LISTEN connection of its own (not Django's), used only to sleep until a notification (a halt, by default)
    or the poll's end."""

    def __init__(self, channel: str = HALT_CHANNEL, who: str = "fleet") -> None:
        self._conn: psycopg.Connection[Any] | None = None
        self._next_try = 0.0
        self.channel, self.who = channel, who

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
            conn.execute(f"LISTEN {self.channel}")  # one of the constants above, never input
        except Exception as exc:
            logger.info("%s: no notifications for now (%s); polling only", self.who, type(exc).__name__)
            return None
        self._conn = conn
        return conn

    def listen(self) -> bool:
        """Start listening now (else at the first wait); whether the connection is up."""
        return self._connect() is not None

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """Sleep until a notification arrives (True), the timeout passes or `stop` is set (False)."""
        conn = self._connect()
        if conn is None:
            stop.wait(timeout)
            return False
        deadline = time.monotonic() + timeout
        try:
            while not stop.is_set():  # in slices: a long wait still ends soon after `stop`
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                for _ in conn.notifies(timeout=min(left, STOP_CHECK_S), stop_after=1):
                    return True
        except Exception as exc:
            logger.info("%s: notifications lost (%s); polling until reconnected", self.who, type(exc).__name__)
            self.close()
            stop.wait(timeout)
        return False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
