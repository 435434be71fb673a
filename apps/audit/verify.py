"""Verifying the hash chain: every entry's hash recomputed from its stored fields, in seq order.

`verify_entries` walks rows and stops at the first break; `chain_verify` reads them from the database.
A long range is split into slices checked side by side, one forked process per core
(`_verify_slices`): each entry's check needs only its own fields and the stored hash of the entry
before it, so a slice starting after entry #k is checked from #k's stored hash, and the slice before
it proves that stored hash right (it recomputes #k's hash and ends exactly at #k). The first broken
entry of the lowest broken slice is the report's, as the sequential walk would name it. A forked
child opens its own database connection, never uses the parent's, logs nothing and leaves with
os._exit; if anything about the fork fails, the range is walked in this process as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import queue
import threading
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from apps.audit.chain import GENESIS_HASH, json_parse, json_str, json_value

# Below this many entries a fork costs more than it saves.
PARALLEL_MIN_ENTRIES = 40_000


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    last_seq: int
    last_hash: str
    broken_seq: int | None = None
    reason: str = ""


# What the verifier reads of each entry, in this order, a page at a time: created_at as entry_hash
# writes it (UTC, ISO 8601, microseconds; a test holds the two equal), data as PostgreSQL prints the jsonb.
_ENTRY_PAGE_SQL = (
    "SELECT seq, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'), "
    "actor_user_id, actor, ip, otp_verified, action, target_type, target_id, data::text, prev_hash, hash "
    "FROM audit_auditentry WHERE seq > %s AND seq <= %s ORDER BY seq LIMIT %s"
)


def verify_entries(
    rows: Iterable[tuple[Any, ...]], *, start_seq: int = 1, prev_hash: str = GENESIS_HASH
) -> ChainReport:
    """Walk rows of _ENTRY_PAGE_SQL's columns (data as JSON text) in seq order; stop at the first break.

    By default from #1; from a later entry with `start_seq` and the hash of the entry before it.
    Each hash is recomputed from the stored fields: the text `entry_hash` hashes, built from its
    pieces without a dict and a sort per row (apps.audit.chain.EntryText; a test holds them equal).
    """
    expected_seq, checked = start_seq, 0
    sha256, loads, as_str, as_value = hashlib.sha256, json_parse, json_str, json_value
    for (
        seq,
        created_at,
        actor_user_id,
        actor,
        ip,
        otp_verified,
        action,
        target_type,
        target_id,
        data,
        stored_prev,
        stored_hash,
    ) in rows:
        if seq != expected_seq:
            reason = f"entry #{expected_seq} is missing" if seq > expected_seq else f"entry #{seq} is out of order"
            return ChainReport(False, checked, expected_seq - 1, prev_hash, expected_seq, reason)
        if stored_prev != prev_hash:
            reason = "its prev_hash does not match the entry before it"
            return ChainReport(False, checked, seq - 1, prev_hash, seq, reason)
        text = (
            f'{{"action":{as_str(action)},"actor":{as_str(actor)},'
            f'"actor_user_id":{"null" if actor_user_id is None else actor_user_id},'
            f'"created_at":"{created_at}",'
            f'"data":{"{}" if data == "{}" else as_value(loads(data))},'
            f'"ip":{"null" if ip is None else as_str(ip)},'
            f'"otp_verified":{"true" if otp_verified is True else "false"},'
            f'"prev_hash":{as_str(stored_prev)},"seq":{seq},'
            f'"target_id":{as_str(target_id)},"target_type":{as_str(target_type)}}}'
        )
        if sha256(text.encode()).hexdigest() != stored_hash:
            return ChainReport(False, checked, seq - 1, prev_hash, seq, "its content does not match its hash")
        prev_hash, expected_seq, checked = stored_hash, seq + 1, checked + 1
    return ChainReport(True, checked, expected_seq - 1, prev_hash)


def _entry_pages(*, after_seq: int, upto_seq: int, page_size: int) -> Generator[list[tuple[Any, ...]]]:
    """Entries after `after_seq` up to `upto_seq` in seq order, `page_size` at a time (keyset pages: each one
    indexed range read, however long the log).

    The next page is read while the caller checks this one: by a thread, on this thread's connection (so in
    the caller's transaction, seeing what it sees), which nothing else uses meanwhile. The database and the
    network then work while Python hashes.
    """
    db = connections[DEFAULT_DB_ALIAS]
    pages: queue.Queue[list[tuple[Any, ...]] | BaseException | None] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand_over(item: list[tuple[Any, ...]] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                pages.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            with db.cursor() as cursor:
                after = after_seq
                while after < upto_seq:
                    cursor.execute(_ENTRY_PAGE_SQL, [after, upto_seq, page_size])
                    rows = cursor.fetchall()
                    if not rows or not hand_over(rows):
                        break
                    after = rows[-1][0]
        except BaseException as exc:  # handed to the caller, raised there
            hand_over(exc)
        finally:
            hand_over(None)

    db.ensure_connection()
    db.inc_thread_sharing()
    reader = threading.Thread(target=read, name="audit-verify-reader", daemon=True)
    reader.start()
    try:
        while (item := pages.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()
        db.dec_thread_sharing()


def chain_verify(*, upto: int, chunk_size: int, after_seq: int, after_hash: str) -> ChainReport:
    """Entries after `after_seq` up to `upto`, on every core when the range is long (see the module docstring)."""
    processes = max(1, int(getattr(settings, "AUDIT_VERIFY_PROCESSES", 0) or os.cpu_count() or 1))
    # Inside a transaction the children (other connections) would not see what it wrote: walk it here.
    alone = not connections[DEFAULT_DB_ALIAS].in_atomic_block
    if processes > 1 and alone and upto - after_seq >= PARALLEL_MIN_ENTRIES:
        report = _verify_slices(
            upto=upto, chunk_size=chunk_size, after_seq=after_seq, after_hash=after_hash, k=processes
        )
        if report is not None:
            return report
    return chain_verify_one(lo=after_seq, hi=upto, chunk_size=chunk_size, start_hash=after_hash)


def _slice_report(report: ChainReport, hi: int) -> ChainReport:
    """A slice that checked out but ended before its last seq is missing its tail."""
    if report.ok and report.last_seq != hi:
        missing = report.last_seq + 1
        return ChainReport(
            False, report.checked, report.last_seq, report.last_hash, missing, f"entry #{missing} is missing"
        )
    return report


def _read_slice(params: dict[str, Any], lo: int, hi: int, chunk_size: int, start_hash: str) -> ChainReport:
    """In a forked child: the slice (lo, hi] on a connection of its own."""
    with psycopg.connect(**params) as conn, conn.cursor() as cursor:

        def rows() -> Generator[tuple[Any, ...]]:
            after = lo
            while after < hi:
                cursor.execute(_ENTRY_PAGE_SQL, [after, hi, chunk_size])
                page = cursor.fetchall()
                if not page:
                    return
                yield from page
                after = page[-1][0]

        return verify_entries(rows(), start_seq=lo + 1, prev_hash=start_hash)


def _fork_slice(params: dict[str, Any], lo: int, hi: int, chunk_size: int, start_hash: str) -> tuple[int, int]:
    """Fork a child that checks (lo, hi] and writes its report as JSON to a pipe; returns (pid, read end)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing of the parent's is touched; it always leaves through os._exit
        code = 1
        try:
            os.close(read_end)
            report = _read_slice(params, lo, hi, chunk_size, start_hash)
            with os.fdopen(write_end, "w") as out:
                out.write(json.dumps(dataclasses.asdict(report)))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    return pid, read_end


def _collect(pid: int, read_end: int) -> ChainReport | None:
    with os.fdopen(read_end) as answer:
        text = answer.read()
    _, status = os.waitpid(pid, 0)
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0 or not text:
        return None
    return ChainReport(**json.loads(text))


def _verify_slices(*, upto: int, chunk_size: int, after_seq: int, after_hash: str, k: int) -> ChainReport | None:
    size = -(-(upto - after_seq) // k)
    edges = [after_seq + i * size for i in range(k)] + [upto]
    db = connections[DEFAULT_DB_ALIAS]
    with db.cursor() as cursor:  # the stored hash each later slice starts from
        cursor.execute("SELECT seq, hash FROM audit_auditentry WHERE seq = ANY(%s)", [edges[1:-1]])
        stored = dict(cursor.fetchall())
    if len(stored) != k - 1:
        return None  # a boundary entry is missing: the sequential walk names it
    starts = [after_hash] + [stored[edge] for edge in edges[1:-1]]
    params = db.get_connection_params()
    children: list[tuple[int, int]] = []
    try:
        for i in range(1, k):
            children.append(_fork_slice(params, edges[i], edges[i + 1], chunk_size, starts[i]))
    except OSError:
        pass  # fewer children: the missing slices make the answer None below
    first = chain_verify_one(lo=edges[0], hi=edges[1], chunk_size=chunk_size, start_hash=starts[0])
    reports: list[ChainReport | None] = [first]
    for pid, read_end in children:
        with contextlib.suppress(OSError):
            reports.append(_collect(pid, read_end))
            continue
        reports.append(None)
    if len(reports) != k or any(r is None for r in reports):
        return None
    checked = 0
    for report, hi in zip(reports, edges[1:], strict=True):
        assert report is not None
        report = _slice_report(report, hi)
        if not report.ok:
            return dataclasses.replace(report, checked=checked + report.checked)
        checked += report.checked
    last = reports[-1]
    assert last is not None
    return ChainReport(True, checked, upto, last.last_hash)


def chain_verify_one(*, lo: int, hi: int, chunk_size: int, start_hash: str) -> ChainReport:
    """(lo, hi] in this process, the next page read while this one is checked."""
    pages = _entry_pages(after_seq=lo, upto_seq=hi, page_size=chunk_size)
    try:
        return verify_entries(itertools.chain.from_iterable(pages), start_seq=lo + 1, prev_hash=start_hash)
    finally:
        pages.close()
