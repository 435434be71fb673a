"""The settled horizon: a row committed after a higher sequence number was read is never skipped.

Sequence numbers are taken before commit, so a slow transaction can commit seq N after seq N+1 was
committed and read. These tests hold such a transaction open for real, on a second database
connection in another thread, and check every reader: the page cursor (event_cursor), the hub's
read (events_after) and the catch-up endpoint (visible_events).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from apps.events.models import Event
from apps.events.selectors import event_cursor, events_after, settled_seq
from apps.events.services import FLOOR_LOCK_BASE, publish
from tests.people import Person

CATCH_UP = reverse("live:events")

pytestmark = pytest.mark.django_db(transaction=True)


class OpenPublisher:
    """A transaction on its own connection that has published one event and waits to end."""

    def __init__(self) -> None:
        self.published = threading.Event()
        self.finish = threading.Event()
        self.commit = True
        self.seq = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            try:
                with transaction.atomic():
                    self.seq = publish(kind="order_new", data={"slow": True}).seq
                    self.published.set()
                    assert self.finish.wait(timeout=30)
                    if not self.commit:
                        raise _RollBack
            except _RollBack:
                pass
        except BaseException as exc:
            self.error = exc
            self.published.set()
        finally:
            connection.close()

    def end(self, *, commit: bool) -> None:
        self.commit = commit
        self.finish.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive() and self.error is None, self.error


class _RollBack(Exception):
    pass


@contextmanager
def open_publisher() -> Iterator[OpenPublisher]:
    slow = OpenPublisher()
    slow.thread.start()
    assert slow.published.wait(timeout=30) and slow.error is None, slow.error
    try:
        yield slow
    finally:
        if slow.thread.is_alive():
            slow.end(commit=False)


def ours(found: list[Event], *seqs: int) -> list[int]:
    """Our rows among those read (a worker left over from another test may still be publishing)."""
    return [e.seq for e in found if e.seq in seqs]


def test_a_row_committed_after_a_higher_one_was_read_is_not_skipped() -> None:
    before = publish(kind="heartbeat", data={}).seq
    with open_publisher() as slow:
        fast = publish(kind="fill", data={"fast": True}).seq
        assert before < slow.seq < fast
        # The higher row is committed and visible, yet no reader moves past the open one's number.
        assert Event.objects.filter(seq=fast).exists() and not Event.objects.filter(seq=slow.seq).exists()
        assert settled_seq() < slow.seq and event_cursor() < slow.seq
        found, cursor, held = events_after(after=before, limit=100)
        assert found == [] and cursor < slow.seq and held
        slow.end(commit=True)
    found, cursor, _ = events_after(after=before, limit=100)
    assert ours(found, slow.seq, fast) == [slow.seq, fast]
    assert cursor >= fast and event_cursor() >= fast


def test_the_catch_up_endpoint_stops_below_an_open_transaction_too(
    logged_in: Callable[[str], tuple[Client, Person]],
) -> None:
    client, _ = logged_in("viewer")
    before = publish(kind="heartbeat", data={}).seq
    with open_publisher() as slow:
        fast = publish(kind="fill", data={}).seq
        assert client.get(CATCH_UP, {"after": before}).json() == {"events": [], "last": before}
        slow.end(commit=True)
    body = client.get(CATCH_UP, {"after": before}).json()
    assert [e["seq"] for e in body["events"] if e["seq"] in (slow.seq, fast)] == [slow.seq, fast]


def test_a_rolled_back_number_holds_nothing_back_once_its_transaction_ends() -> None:
    before = publish(kind="heartbeat", data={}).seq
    with open_publisher() as slow:
        fast = publish(kind="fill", data={}).seq
        assert events_after(after=before, limit=100)[0] == []
        slow.end(commit=False)
    found, cursor, _ = events_after(after=before, limit=100)
    assert ours(found, slow.seq, fast) == [fast] and cursor >= fast
    assert not Event.objects.filter(seq=slow.seq).exists()


def test_our_own_open_transaction_does_not_hold_back_what_we_can_see() -> None:
    """A view that publishes and then renders a page cursor: it sees its own row, so it is settled for it."""
    before = event_cursor()
    with transaction.atomic():
        mine = publish(kind="heartbeat", data={}).seq
        assert event_cursor() == mine
        assert [e.seq for e in events_after(after=before, limit=10)[0]] == [mine]


@pytest.mark.parametrize("limit", [1, 2])
def test_a_full_page_moves_the_cursor_only_to_its_last_row(limit: int) -> None:
    seqs = [publish(kind="heartbeat", data={"n": n}).seq for n in range(3)]
    found, cursor, _ = events_after(after=seqs[0] - 1, limit=limit)
    assert [e.seq for e in found] == seqs[:limit] and cursor == seqs[limit - 1]


def test_other_advisory_locks_are_not_floors() -> None:
    """The audit log's and kill switch's advisory locks (small keys) are not floors."""
    mine = publish(kind="heartbeat", data={}).seq
    other = threading.Event()
    done = threading.Event()

    def hold_audit_like_lock() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [0x6175646974])
                other.set()
                done.wait(timeout=30)
        finally:
            connection.close()

    thread = threading.Thread(target=hold_audit_like_lock, daemon=True)
    thread.start()
    try:
        assert other.wait(timeout=30)
        assert settled_seq() >= mine
    finally:
        done.set()
        thread.join(timeout=30)


def _floors_held() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND classid >= %s",
            [FLOOR_LOCK_BASE >> 32],
        )
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def test_a_transaction_publishing_many_events_holds_one_floor_not_one_per_event() -> None:
    """PostgreSQL's lock table is small (64 per connection by default): thousands of locks would fail the caller."""
    with transaction.atomic():
        for n in range(300):
            publish(kind="order_update", data={"n": n})
        assert _floors_held() == 1
    assert _floors_held() == 0


def test_a_floor_released_by_a_rolled_back_savepoint_is_taken_again() -> None:
    with transaction.atomic():
        with pytest.raises(_RollBack), transaction.atomic():
            publish(kind="heartbeat", data={})
            assert _floors_held() == 1
            raise _RollBack
        assert _floors_held() == 0  # released with the savepoint
        publish(kind="heartbeat", data={})
        assert _floors_held() == 1
