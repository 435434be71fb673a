"""What a fleet supervisor that died left running: found by the mark in its processes' environment, and stopped.

Every process a supervisor starts (bot workers, spawned or forked from the template; the template; the market-data
feed) carries FLEET_MARK_ENV = "<fleet>:<supervisor pid>:<supervisor start>": the fleet (the database and the host
label, hashed: several deployments and test sessions share a machine) and the supervisor's pid with its start time
in clock ticks since boot, so that a reused pid is never taken for a live supervisor.

Workers die with their supervisor (PR_SET_PDEATHSIG: SIGTERM, a warm shutdown that lets the current tick finish),
but a tick blocked on a slow exchange keeps one alive for as long as the exchange takes, and a new supervisor that
started a second worker for the same bot meanwhile would run that bot twice. So before it starts anything a
supervisor looks for processes of its fleet whose supervisor is gone, sends them SIGTERM, waits for them, and
SIGKILLs what is left after the grace period: a tick cut short re-sends the same client order ids on the next
worker's first tick, and the exchange refuses a double (the gate adopts the order), so no half order stays behind.
Processes of a supervisor that is still alive (another one of the same fleet, or this one) are never touched.

Linux only (/proc), like PR_SET_PDEATHSIG; the supervisor sees its own user's processes, which its workers are.
Only the environment of a process whose command line is one a supervisor starts is read (never, say, a database
server's).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import signal
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)

FLEET_MARK_ENV = "BOTCONSOLE_FLEET_SUPERVISOR"
KILL_WAIT_S = 5.0
_QUEUE_RE = re.compile(rb"-Q bot\.(\d+)(?:\s|$)")
# What the command line of a process a supervisor starts shows: only those have their environment read.
_STARTED_RE = re.compile(rb"-Q bot\.\d+(?:\s|$)|botconsole bot worker template|apps\.bots\.zygote|runmarketdata")


def fleet_id(*, database: str, host_label: str) -> str:
    """Names one fleet: the bots of one host label on one database (never a credential: host, port and name)."""
    return hashlib.sha256(f"{database}\0{host_label}".encode()).hexdigest()[:16]


def start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot); None if there is no such process or it is a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":
        return None
    return int(fields[19])  # field 22 of proc(5), counted from 1; fields[0] is field 3


def fleet_mark(fleet: str) -> str:
    """The mark this process (a supervisor) gives every process it starts."""
    return f"{fleet}:{os.getpid()}:{start_ticks(os.getpid())}"


@dataclass(frozen=True)
class Leftover:
    pid: int
    started: int
    supervisor_pid: int
    bot_id: int | None  # None: the template or the market-data feed

    def alive(self) -> bool:
        return start_ticks(self.pid) == self.started


@dataclass
class Found:
    leftovers: list[Leftover]
    # Bots whose worker belongs to another supervisor of this fleet that is alive: not ours to touch.
    elsewhere: set[int]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _mark_of(pid: int, fleet: str) -> tuple[int, int | None] | None:
    prefix = f"{FLEET_MARK_ENV}={fleet}:".encode()
    for item in _read(f"/proc/{pid}/environ").split(b"\0"):
        if item.startswith(prefix):
            sup_pid, _, sup_start = item[len(prefix) :].partition(b":")
            with contextlib.suppress(ValueError):
                return int(sup_pid), int(sup_start) if sup_start.isdigit() else None
    return None


def leftovers_find(fleet: str) -> Found:
    """The processes of `fleet` whose supervisor is gone (and the bots run by another live supervisor of it)."""
    found = Found([], set())
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        cmdline = _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ")
        if not _STARTED_RE.search(cmdline):
            continue  # not one of ours: its environment (maybe secrets) is none of our business
        mark = _mark_of(pid, fleet)
        started = start_ticks(pid)
        if mark is None or started is None:
            continue
        queue = _QUEUE_RE.search(cmdline)
        bot_id = int(queue.group(1)) if queue else None
        supervisor_pid, supervisor_start = mark
        if supervisor_start is not None and start_ticks(supervisor_pid) == supervisor_start:
            if bot_id is not None and supervisor_pid != me:
                found.elsewhere.add(bot_id)
            continue
        found.leftovers.append(Leftover(pid, started, supervisor_pid, bot_id))
    return found


def _signal(leftover: Leftover, sig: int) -> None:
    if not leftover.alive():
        return  # gone, or its pid now names another process
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # A worker leads its own session and group: the group takes anything it started with it.
        if os.getpgid(leftover.pid) == leftover.pid:
            os.killpg(leftover.pid, sig)
        else:
            os.kill(leftover.pid, sig)


def _wait_gone(leftovers: list[Leftover], timeout: float) -> list[Leftover]:
    deadline = time.monotonic() + timeout
    while (left := [x for x in leftovers if x.alive()]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def leftovers_stop(leftovers: list[Leftover], grace_s: float) -> dict[int, str]:
    """SIGTERM every leftover at once, SIGKILL those still alive after `grace_s`; returns pid -> what ended it."""
    for leftover in leftovers:
        _signal(leftover, signal.SIGTERM)
    stubborn = _wait_gone(leftovers, grace_s)
    for leftover in stubborn:
        logger.warning("fleet: leftover process %s did not stop within %.0f s: SIGKILL", leftover.pid, grace_s)
        _signal(leftover, signal.SIGKILL)
    survivors = {x.pid for x in _wait_gone(stubborn, KILL_WAIT_S)}
    killed = {x.pid for x in stubborn}
    return {
        x.pid: "still running" if x.pid in survivors else ("killed" if x.pid in killed else "exited") for x in leftovers
    }
