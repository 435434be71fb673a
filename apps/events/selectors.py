"""Reading the live event store, never past a row that could still commit below what was read."""

from __future__ import annotations

from django.db import connection

from apps.events.models import Event
from apps.events.services import FLOOR_LOCK_BASE, sequence_name

# The lowest floor advertised by another transaction of this database that is still open (see
# apps/events/services.publish): a bigint advisory key shows in pg_locks as classid (high 32 bits),
# objid (low 32 bits) and objsubid 1.
_LOWEST_FLOOR = """
SELECT min(((l.classid::bigint << 32) | l.objid::bigint) - %(base)s)
FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.classid >= %(base_hi)s
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.pid <> pg_backend_pid()
"""


def _horizon() -> tuple[int, int]:
    """(settled, last): see settled_seq; `last` is the last number handed out."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT last_value, is_called FROM {sequence_name()}")  # noqa: S608  # nosec B608 - our sequence
        row = cursor.fetchone()
        assert row is not None
        last = int(row[0]) if row[1] else int(row[0]) - 1
        cursor.execute(_LOWEST_FLOOR, {"base": FLOOR_LOCK_BASE, "base_hi": FLOOR_LOCK_BASE >> 32})
        floor_row = cursor.fetchone()
    floor = floor_row[0] if floor_row is not None else None
    return (last if floor is None else min(last, int(floor))), last


def settled_seq() -> int:
    """The highest sequence number S such that every event numbered <= S that will ever commit has.

    Rows above S may still be joined by a lower one from a transaction still open; a reader that
    delivers only up to S never skips a row. Three statements, in this order, each with its own
    snapshot (READ COMMITTED): (1) the last number handed out, L; (2) the lowest floor F of the
    publishing transactions still open; then the caller's own read. Any number <= L was taken
    before (1), by a transaction that advertised its floor even earlier: at (2) it has either ended
    (so its row, if committed, is in the caller's later snapshot) or still holds that floor, and all
    of its numbers are above F. So min(L, F) is settled. Our own transaction's rows count as
    settled: we see them. It never decreases: a new floor is the L of its moment.
    """
    return _horizon()[0]


def event_cursor() -> int:
    """A page's starting cursor for live updates: everything up to it is settled (see settled_seq).

    The page's catch-up after it opens its socket fetches what follows, including a row that an
    open transaction commits later with a lower number than the newest row now.
    """
    return settled_seq()


def events_after(*, after: int, limit: int) -> tuple[list[Event], int, bool]:
    """Settled events after `after`, oldest first; the cursor to read from next time; and whether
    numbers already handed out are still held back by an open transaction (look again soon).

    The cursor moves past numbers that never committed (rolled back) but never past an unsettled one.
    """
    upto, last = _horizon()
    if upto <= after:
        return [], after, upto < last
    found = list(Event.objects.filter(seq__gt=after, seq__lte=upto).order_by("seq")[:limit])
    if len(found) == limit:
        return found, found[-1].seq, True
    return found, upto, upto < last
