"""A live bot's dead-man's switch: if the console dies, the exchange cancels the bot's orders itself.

When its worker is ready, a live bot arms the exchange's cancel-all countdown (DEADMAN_TIMEOUT_S) for
each of its symbols, and a background thread sets it again every DEADMAN_REFRESH_S. While the worker
lives the countdown never runs out; when the worker is SIGKILLed or crashes, or the whole console
(machine, network) goes away, nobody sets it again and the exchange cancels the open orders.

A deliberate stop (the bot no longer wanted running) disarms it, so that the exchange does not cancel
orders the operator chose to leave resting. A worker that ends while its bot is still wanted running
(the supervisor shutting down, a halt) leaves it armed: nobody watches those orders any more.

The thread has its own exchange client, built at bootstrap from the same in-memory credentials, so the
tick path's client is never used from two threads and a slow tick never delays a refresh. Failures
are logged by error kind only (exchange errors may quote request details) and retried at the next
interval; a streak long enough for the countdown to run out raises an alert. The state (armed, last
refresh, failures) goes to a Redis key for the bot page: times and error kinds, never a secret.

On the sandbox each symbol has its own countdown. Where an exchange's countdown covers the whole
account (most ccxt classes), the bots sharing that account share it: one bot's deliberate stop
disarms it until another bot's next refresh, at most DEADMAN_REFRESH_S later.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from django.conf import settings
from django.db import connection

from apps.alerts.services import alert_raise
from apps.bots.models import Bot
from apps.core.display import moment_text
from apps.exchanges import port

logger = logging.getLogger(__name__)

STATE_TTL_S = 7 * 24 * 3600
# On a clean stop, how long to wait for a refresh in flight before disarming anyway.
SHUTDOWN_WAIT_S = 5.0


class State:
    ARMED = "armed"
    FAILING = "failing"
    DISARMED = "disarmed"
    UNAVAILABLE = "unavailable"


def state_key(bot_id: int) -> str:
    """Redis key where a bot worker reports its dead-man's switch (like the token accessor key)."""
    return f"botconsole:bot:{bot_id}:deadman"


_redis_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    # One client (and connection pool) per process: the worker writes every refresh.
    global _redis_client
    if _redis_client is None:
        _redis_client = redis.Redis.from_url(settings.REDIS_URL)
    return _redis_client


def deadman_state(bot_id: int) -> dict[str, Any] | None:
    """What the bot's worker last reported (None: nothing yet). Raises redis.RedisError."""
    raw = _redis().get(state_key(bot_id))
    if not raw:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else None


def alert_after(*, refresh_s: float, timeout_s: float) -> int:
    """Failures in a row after which the countdown may run out before the next refresh."""
    return max(1, math.ceil(timeout_s / refresh_s) - 1)


def _clock(epoch: float | None) -> str:
    return "?" if epoch is None else moment_text(datetime.fromtimestamp(epoch, tz=UTC))


@dataclass(eq=False)
class DeadmanSwitch:
    """Keeps one bot's exchange countdown from running out while this process lives."""

    bot_id: int
    bot_name: str
    exchange_id: str
    exchange: port.Exchange = field(repr=False)  # its own port client (not the tick's): it holds the key
    symbols: Callable[[], list[str]]  # the bot's symbols now (they may change while it runs)
    refresh_s: float
    timeout_s: float
    armed_symbols: list[str] = field(default_factory=list)
    failures: int = 0
    alerted: bool = False
    last_refresh: float | None = None  # epoch seconds of the last successful arm
    stop: threading.Event = field(default_factory=threading.Event)
    # Held around every call to the exchange: a disarm never races a refresh in flight.
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None

    @property
    def expires_at(self) -> float | None:
        return None if self.last_refresh is None else self.last_refresh + self.timeout_s

    # -- run ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Arm now (before the first tick can place an order), then refresh in a background thread."""
        with self.lock:
            self.refresh()
        self.thread = threading.Thread(target=self._loop, name=f"bot-{self.bot_id}-deadman", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        # A fixed cadence, not a pause after each attempt: a slow failing call does not push the
        # next attempt (or the alert) past the moment the countdown runs out.
        next_at = time.monotonic() + self.refresh_s
        try:
            while not self.stop.wait(max(0.0, next_at - time.monotonic())):
                next_at = max(next_at + self.refresh_s, time.monotonic())
                with self.lock:
                    if self.stop.is_set():
                        return
                    try:
                        self.refresh()
                    finally:
                        # Every 15 s is not worth a database session held between: a worker keeps one (its ticks').
                        connection.close()
        finally:
            connection.close()  # this thread's own database connection, if it opened one

    def refresh(self) -> bool:
        """Set the countdown once; on failure log, report and alert (never raises)."""
        symbols = self._current_symbols()
        try:
            # No retries inside one refresh: the next interval is the retry, and it comes on time.
            self.exchange.deadman_arm(symbols=symbols, timeout_ms=round(self.timeout_s * 1000), retries=0)
        except Exception as exc:  # whatever it is, the thread goes on and retries at the next interval
            self._failed(type(exc).__name__)
            return False
        self.last_refresh = time.time()
        if self.failures:
            logger.info("bot %s: dead-man's switch refreshed again after %d failures", self.bot_id, self.failures)
            if self.alerted:
                self._alert(
                    "deadman_recovered",
                    "warning",
                    f"Bot {self.bot_name}: the dead-man's switch on {self.exchange_id} is refreshed again "
                    f"after {self.failures} failures.",
                )
        self.failures, self.alerted = 0, False
        self._report(State.ARMED)
        return True

    def _current_symbols(self) -> list[str]:
        # Once armed, a symbol stays covered until the worker ends: the bot may still have orders there.
        try:
            for symbol in self.symbols():
                if symbol not in self.armed_symbols:
                    self.armed_symbols.append(symbol)
        except Exception as exc:  # the database is away: keep covering what we covered
            logger.warning("bot %s: cannot read its symbols (%s)", self.bot_id, type(exc).__name__)
        return list(self.armed_symbols)

    def _failed(self, kind: str) -> None:
        self.failures += 1
        logger.warning(
            "bot %s: dead-man's switch refresh failed (%s, %d in a row); retrying in %g s",
            self.bot_id,
            kind,
            self.failures,
            self.refresh_s,
        )
        self._report(State.FAILING, error=kind)
        if self.failures >= alert_after(refresh_s=self.refresh_s, timeout_s=self.timeout_s) and not self.alerted:
            if self.expires_at is None:
                outlook = "it is not armed: if the console dies, the bot's orders stay on the exchange"
            else:
                outlook = (
                    f"unless a refresh gets through, {self.exchange_id} cancels the bot's open orders "
                    f"at about {_clock(self.expires_at)}"
                )
            message = (
                f"Bot {self.bot_name}: the dead-man's switch could not be refreshed {self.failures} times "
                f"in a row ({kind}); {outlook}."
            )
            logger.error("bot %s: %s", self.bot_id, message)
            self.alerted = self._alert("deadman_failing", "critical", message, error=kind)

    def _alert(self, kind: str, severity: str, message: str, **data: Any) -> bool:
        try:
            alert_raise(
                kind=kind,
                severity=severity,
                message=message,
                target=Bot.objects.filter(pk=self.bot_id).first(),
                data={"bot": self.bot_id, "exchange": self.exchange_id, "failures": self.failures, **data},
                source=f"system:bot-{self.bot_id}",
            )
        except Exception as exc:  # the log line above stands; the next failure tries again
            logger.error("bot %s: could not raise the %s alert (%s)", self.bot_id, kind, type(exc).__name__)
            return False
        return True

    def _report(self, state: str, *, error: str = "") -> None:
        report_state(
            self.bot_id,
            state=state,
            exchange=self.exchange_id,
            symbols=self.armed_symbols,
            refresh_s=self.refresh_s,
            timeout_s=self.timeout_s,
            last_refresh=self.last_refresh,
            failures=self.failures,
            error=error,
        )

    # -- stop --------------------------------------------------------------------------------

    def shutdown(self, *, disarm: bool) -> None:
        """Stop refreshing; disarm on a deliberate stop, otherwise leave the countdown to run out."""
        self.stop.set()
        got = self.lock.acquire(timeout=SHUTDOWN_WAIT_S)
        try:
            if not disarm:
                if self.expires_at is not None:
                    logger.warning(
                        "bot %s: worker ends while its bot is wanted running: the dead-man's switch stays armed; "
                        "%s cancels its open orders at about %s unless a new worker refreshes it",
                        self.bot_id,
                        self.exchange_id,
                        _clock(self.expires_at),
                    )
                return
            try:
                if self.armed_symbols:
                    self.exchange.deadman_disarm(symbols=self.armed_symbols)
            except Exception as exc:
                logger.error(
                    "bot %s: could not disarm the dead-man's switch (%s): %s cancels its open orders at about %s",
                    self.bot_id,
                    type(exc).__name__,
                    self.exchange_id,
                    _clock(self.expires_at) if self.expires_at is not None else "the end of the countdown",
                )
                return
            self.last_refresh = None
            self._report(State.DISARMED)
            logger.info("bot %s: dead-man's switch disarmed (bot stopped)", self.bot_id)
        finally:
            if got:
                self.lock.release()
            if self.thread is not None and self.thread is not threading.current_thread():
                self.thread.join(timeout=1.0)


def report_state(bot_id: int, *, state: str, **data: Any) -> None:
    """Write the switch's state for the bot page; a Redis failure only costs the display."""
    value = {"state": state, "updated_at": time.time(), **data}
    try:
        _redis().set(state_key(bot_id), json.dumps(value), ex=STATE_TTL_S)
    except redis.RedisError as exc:
        logger.warning("bot %s: cannot report the dead-man's switch state (%s)", bot_id, type(exc).__name__)
