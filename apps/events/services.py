"""Publishing live events: a row in the caller's transaction, a tiny announcement after commit.

The announcement carries only the sequence number and only wakes the web processes' hubs
(apps/events/hub.py), which read every row after their cursor from the database; so an
announcement that is lost (Redis down, a timeout) delays an event, it never loses it, and nothing
in Redis is more than "event 123 exists". A rolled-back transaction never announces anything.

Ordering across transactions: sequence numbers are taken before commit, so a slow transaction can
commit seq 10 after seq 11 was read. Each publishing transaction therefore first advertises a
floor (below every sequence it will take) as a shared advisory lock that lives until it ends;
readers deliver only up to the lowest floor of the transactions still open
(apps/events/selectors.settled_seq).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from datetime import UTC
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction
from redis.backoff import NoBackoff
from redis.retry import Retry

from apps.core.exceptions import ApplicationError
from apps.core.logging import redact
from apps.core.text import json_safe
from apps.events.models import Event

logger = logging.getLogger(__name__)

# "bot_log": a batch of a bot worker's log lines (apps.trading.logs), for the bot page's live tail. Not one
# of Event.Kind's choices (they only label the column; nothing validates a row against them).
KINDS = frozenset(Event.Kind.values) | {"bot_log"}
DEFAULT_CHANNEL = "botconsole:live:events"
# The advisory-lock keys (bigint) of live-event floors: FLOOR_LOCK_BASE + floor. Far above the
# project's other advisory keys (audit, checkpoints, kill switch are below 2**40) and leaves room
# for 1.4e18 events.
FLOOR_LOCK_BASE = 0x6C69766500000000  # "live" << 32
# An announcement waits at most this long for Redis per try (two tries); after a failure the next
# ones are skipped for ANNOUNCE_BACKOFF_S, so a Redis outage costs a tick one wait per back-off,
# not one per event.
ANNOUNCE_TIMEOUT_S = 0.2
ANNOUNCE_BACKOFF_S = 2.0


_FLOOR_SQL = """
SELECT pg_advisory_xact_lock_shared(%(base)s + CASE WHEN is_called THEN last_value ELSE last_value - 1 END)
FROM {sequence}
"""
# Per thread (a Django connection belongs to one thread): the open transaction's _Pending, if any.
_floor = threading.local()


def notify_channel() -> str:
    """The Redis pub/sub channel announcements go to (a setting, so test runs can keep apart)."""
    return str(getattr(settings, "LIVE_NOTIFY_CHANNEL", DEFAULT_CHANNEL))


def event_json(event: Event) -> dict[str, Any]:
    """What a client receives, over the websocket and from the catch-up endpoint alike."""
    at = event.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {"seq": event.seq, "kind": event.kind, "bot": event.bot_id or None, "at": at, "data": event.payload}


@functools.cache
def sequence_name() -> str:
    """The (quoted, schema-qualified) sequence behind Event.seq, looked up once per process."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'seq')", [Event._meta.db_table])
        row = cursor.fetchone()
    if row is None or not row[0]:
        raise RuntimeError(f"{Event._meta.db_table}.seq has no sequence")
    return str(row[0])


def publish(*, kind: str, data: dict[str, Any], bot_id: int | None = None) -> Event:
    """Store a live event in the caller's transaction; announce it once that commits.

    Never put a secret in `data`: it is masked here as a last line of defence (the same rules as
    the log filter), but it would still be a bug.
    """
    if kind not in KINDS:
        raise ApplicationError(f"Unknown live event kind {kind!r}; choose one of {', '.join(sorted(KINDS))}.")
    # Round-trip through JSON now so the returned row holds what readers will get (Decimal -> str)
    # and an unserialisable value fails here, in the caller, not later in a socket.
    payload = json_safe(redact(data))
    # savepoint=False: inside the caller's transaction this adds nothing; in autocommit it makes the
    # floor and the row one transaction, so the floor is held until the row is committed.
    with transaction.atomic(savepoint=False):
        pending = _pending()
        if pending is None:  # the transaction's first event (or the first since a savepoint with it rolled back)
            _take_floor()
        event = Event.objects.create(kind=kind, bot_id=bot_id, payload=payload)
        if pending is None:
            _floor.pending = pending = _Pending(event.seq)
            transaction.on_commit(pending)
        else:
            pending.seq = max(pending.seq, event.seq)
    return event


class _Announcer:
    """One per Redis URL and process: a client whose pool is reused by every publish (a bot worker
    publishes from one thread, so one long-lived connection; no event loop, no connection per call)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(
            url,
            socket_connect_timeout=ANNOUNCE_TIMEOUT_S,
            socket_timeout=ANNOUNCE_TIMEOUT_S,
            # Which process holds it, for CLIENT LIST.
            client_name=f"botconsole-live-publisher-{os.getpid()}",
            # One immediate retry (a connection the server closed while idle reconnects), not
            # redis-py's default ten with back-off: that would hold the tick for seconds.
            retry=Retry(NoBackoff(), 1),
        )
        self.lock = threading.Lock()
        self.skip_until = 0.0

    def send(self, channel: str, seq: int) -> bool:
        if time.monotonic() < self.skip_until:
            return False
        try:
            self.client.publish(channel, str(seq))
        except redis.RedisError:
            with self.lock:
                self.skip_until = time.monotonic() + ANNOUNCE_BACKOFF_S
            return False
        return True


class _Pending:
    """A transaction's announcement: one per transaction, of its highest sequence number, run on commit.

    While it is still among the connection's commit hooks, the transaction that took the floor is still open
    and no savepoint it was taken in has rolled back (Django drops the hooks of a rolled-back savepoint, and all
    of them on rollback or commit): so it also says whether the floor is still held.
    """

    __slots__ = ("seq",)

    def __init__(self, seq: int) -> None:
        self.seq = seq

    def __call__(self) -> None:
        announce(self.seq)


def _pending() -> _Pending | None:
    """This thread's transaction's announcement if it is still to run on commit, else None (take a new floor)."""
    pending: _Pending | None = getattr(_floor, "pending", None)
    if pending is None:
        return None
    if any(hook[1] is pending for hook in reversed(connection.run_on_commit)):
        return pending
    _floor.pending = None
    return None


def _take_floor() -> None:
    """Advertise this transaction's floor before it takes a sequence number (nextval in the INSERT
    that follows): the floor is read and locked in one statement, so every number it takes is above.

    Taken once per transaction (see _Pending), not per event, so a transaction that publishes thousands of
    events does not fill PostgreSQL's lock table nor pay a round trip per event. A floor taken inside a
    savepoint is released if that savepoint rolls back; the next event then takes a new one.
    """
    with connection.cursor() as cursor:
        # The sequence's name comes from the catalog (sequence_name), never from input.
        cursor.execute(_FLOOR_SQL.format(sequence=sequence_name()), {"base": FLOOR_LOCK_BASE})


@functools.cache
def _announcer(url: str) -> _Announcer:
    return _Announcer(url)


def announce(seq: int) -> bool:
    """Tell the web processes' hubs that events up to `seq` exist. True if Redis took it.

    Never raises: the trade, fill or alert already committed, and failing it now would be worse
    than a late dashboard; the hubs find the row by sequence on the next announcement or poll.
    """
    if _announcer(settings.REDIS_URL).send(notify_channel(), seq):
        return True
    # No traceback: with Redis down every event would print one; the row is there for the hubs.
    logger.warning("live event %s stored but not announced: Redis unavailable", seq)
    return False
