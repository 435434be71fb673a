"""Executing a kill run: cancel everywhere at once (revoke, stop, purge beside it), verify, flatten, report.

The halt is already committed when a run exists (see services.kill_request), so nothing here is needed to stop
new orders: this cleans up what is already out there and writes the report. Every step is best effort and
timed; a failing step adds a problem and the run ends "failed" instead of "done", but the following steps still
run. Redis may be down: only PostgreSQL, Vault and the exchanges are required.

"revoke", "stop" and "purge" (apps.killswitch.revoke) run in threads beside the exchange steps, so
cancelling is never delayed: the halt is committed and the order gate refuses, so none of them is needed
for safety before the cancel. "stop" is the fleet supervisor's work; it takes the revoke step's end into
account (a worker that logged in after the revoke step read the accessors is revoked then). "cancel"
cancels every open order at once, without waiting for the workers (apps.killswitch.cancel). "verify" is the
final check, and it waits for the stop step: it looks again at every affected account only after the last
worker has exited, cancels anything found, and only then is "0 still open" a fact. If a worker is not
confirmed gone, or an account does not answer, the count is reported as unknown (KillRun.open_unknown) and
the run fails. "flatten" appears only when an admin flagged a live bot beforehand (apps.killswitch.flatten).
Each step in the report has its duration ("ms") and when it ended, counted from the click ("at_ms").

An executor holds its run by a lease (KillRun.claim, heartbeat_at): a thread renews it every second while the run
executes, and every write of the report is made under the claim. A run whose lease lapsed (its control worker was
killed, frozen or cut off from the database for RUN_LEASE) is taken over by the next poller (or `manage.py
killswitch`) and executed again from the start: the cancels, revokes and the stop are idempotent, and the halt
never depended on the executor. The takeover is audited (killswitch.resumed_after_crash) and the report says
what the lost executor had finished. An executor that lost its run (it was only frozen) changes nothing any more:
its writes find no row under its claim, and it publishes no report.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import DatabaseError, close_old_connections, connection
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from apps.audit.services import record
from apps.bots.models import Bot
from apps.killswitch.cancel import (
    VERIFY_ATTEMPTS,
    AccountResult,
    AccountTarget,
    StepDone,
    account_targets,
    exchanges_run,
)
from apps.killswitch.flatten import FlattenSale, flatten_plan, flatten_record
from apps.killswitch.models import RUN_ABANDONED_AFTER, RUN_HEARTBEAT_EVERY, RUN_LEASE, RUN_MAX_ATTEMPTS, KillRun
from apps.killswitch.report import ACTOR, run_finish, run_publish
from apps.killswitch.revoke import STOP_WAIT_S, bots_revoke, queues_purge, workers_wait
from apps.trading.paper import paper_cancel_open
from apps.vault import client as vault

logger = logging.getLogger(__name__)
# The revoke and purge steps run beside the cancel: neither is needed for safety once the halt is committed
# (the order gate refuses every order), and neither may delay a cancel (Vault or Redis may be slow or down).
REVOKE_WAIT_S = 60.0
CANCEL_WAIT_S = 5.0
PURGE_WAIT_S = 30.0
STEP_ORDER = ("revoke", "stop", "purge", "paper", "cancel", "verify", "flatten", "balances")
PAPER_WHY = "Cancelled by the kill switch."


def executor_name() -> str:
    """This process, as a run's report names its executor."""
    return f"{socket.gethostname()[:80]} pid {os.getpid()}"


@dataclass
class _Lease:
    """An executor's hold on its run: renewed every RUN_HEARTBEAT_EVERY by a thread, for as long as it executes."""

    run_id: int
    claim: str
    lost: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def rows(self) -> QuerySet[KillRun]:
        """The run, as long as this executor holds it: every write of the report goes through here."""
        return KillRun.objects.filter(pk=self.run_id, claim=self.claim, status=KillRun.Status.RUNNING)

    def start(self) -> _Lease:
        self._thread = threading.Thread(target=self._beat, name=f"kill-{self.run_id}-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        try:
            while not self._stop.wait(RUN_HEARTBEAT_EVERY.total_seconds()):
                try:
                    if not self.rows().update(heartbeat_at=timezone.now()):
                        self.lost.set()
                        logger.error(
                            "kill run %s: taken over by another executor; this one stops reporting", self.run_id
                        )
                        return
                except DatabaseError as exc:  # renewed on the next beat, unless the lease lapses meanwhile
                    logger.warning("kill run %s: lease not renewed (%s)", self.run_id, type(exc).__name__)
                    close_old_connections()
        finally:
            connection.close()  # this thread's own database connection

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass
class _Steps:
    """The run's report as it grows: each step timed and stored (and announced) as it ends."""

    run: KillRun
    lease: _Lease
    problems: list[str] = field(default_factory=list)
    # What executors that lost this run had counted (orders_cancelled, paper_orders_cancelled, workers_stopped).
    carried: dict[str, int] = field(default_factory=dict)
    _beside: dict[str, threading.Thread] = field(default_factory=dict)
    _beside_done: set[str] = field(default_factory=set)
    _given_up: set[str] = field(default_factory=set)
    # The steps list is written by the run's thread and by a step beside it (stop): one at a time.
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _timed(self, name: str, fn: Callable[[], str]) -> tuple[int, str]:
        started = time.monotonic()
        try:
            detail = fn()
        except Exception as exc:  # a step never aborts the run
            logger.exception("kill run %s: step %s failed", self.run.pk, name)
            detail = f"failed: {type(exc).__name__}: {exc}"[:300]
            self.problems.append(f"{name}: {detail}")
        return int((time.monotonic() - started) * 1000), detail

    def step(self, name: str, fn: Callable[[], str]) -> None:
        self.add(name, *self._timed(name, fn))

    def begin_beside(self, name: str, fn: Callable[[], str]) -> None:
        """Start a step in its own thread, beside the exchange steps (which it must not delay).

        It is stored and announced as soon as it ends, so the report shows it live (the workers' stop).
        """

        def body() -> None:
            try:
                ms, detail = self._timed(name, fn)
                with self._lock:
                    if name in self._given_up:  # end_beside recorded it as failed already
                        return
                    self._beside_done.add(name)
                    at_ms = self._store(name, ms, detail, timezone.now())
                run_publish(self.run, "progress", step=name, ms=ms, at_ms=at_ms, detail=detail)
            finally:
                connection.close()  # this thread's own database connection

        thread = threading.Thread(target=body, name=f"kill-{self.run.pk}-{name}", daemon=True)
        self._beside[name] = thread
        thread.start()

    def join_beside(self, name: str, timeout: float) -> None:
        """Wait for a step started with begin_beside (any thread may call this)."""
        self._beside[name].join(timeout)

    def end_beside(self, name: str, timeout: float) -> None:
        """Wait for a step started with begin_beside; record it as failed if it did not end in time."""
        self._beside[name].join(timeout)
        with self._lock:
            if name not in self._beside_done:
                self._given_up.add(name)
                detail = f"failed: no answer within {timeout:.0f} s"
                self.problems.append(f"{name}: {detail}")
                at_ms = self._store(name, int(timeout * 1000), detail, timezone.now())
                run_publish(self.run, "progress", step=name, ms=int(timeout * 1000), at_ms=at_ms, detail=detail)
                return
        self._beside[name].join(10)  # it has stored its step; only its announcement may remain

    def count(self, **figures: int) -> None:
        """Store figures of the report at once (the page shows them before the run ends), with those carried over."""
        self.lease.rows().update(**{name: value + self.carried.get(name, 0) for name, value in figures.items()})

    def add(self, name: str, ms: int, detail: str, finished: datetime | None = None) -> None:
        with self._lock:
            at_ms = self._store(name, ms, detail, finished or timezone.now())
        run_publish(self.run, "progress", step=name, ms=ms, at_ms=at_ms, detail=detail)

    def _store(self, name: str, ms: int, detail: str, finished: datetime) -> int:
        # at_ms: when the step ended, counted from the click (the run's creation): the report's timeline.
        at_ms = int((finished - self.run.created_at).total_seconds() * 1000)
        # Stored in the order of the procedure, whatever order the concurrent steps finish in.
        steps = [*self.run.steps, {"name": name, "ms": ms, "at_ms": at_ms, "detail": detail}]
        rank = {n: i for i, n in enumerate(STEP_ORDER)}
        self.run.steps = sorted(steps, key=lambda s: rank.get(s["name"], len(rank)))
        self.lease.rows().update(steps=self.run.steps)
        return at_ms


@dataclass
class _Processes:
    """The revoke and stop steps' shared state: what was revoked, whether every worker is gone."""

    bots: list[Bot]
    pv: vault.ProcessVault
    steps: _Steps
    revoked: set[str] = field(default_factory=set)
    # Set once the cancel step has sent every cancel: the revokes (Vault calls, threads of this process) wait for it,
    # so that they take neither Vault nor CPU from the key reads and cancels.
    cancelled: threading.Event = field(default_factory=threading.Event)
    workers_gone: bool = False
    workers_stopped: int = 0

    def revoke(self) -> str:
        # Not needed for safety (the halt is committed; the gate refuses; the fleet has killed the workers), so
        # it waits for the cancels.
        self.cancelled.wait(CANCEL_WAIT_S)
        done = bots_revoke(self.pv, self.bots)
        self.revoked = done.accessors
        self.steps.problems.extend(done.problems)
        return done.detail

    def revoked_by_then(self) -> set[str]:
        """The accessors the revoke step dealt with, once it has ended (it runs beside the stop step)."""
        self.steps.join_beside("revoke", REVOKE_WAIT_S)
        return set(self.revoked)

    def stop(self) -> str:
        # The supervisor, woken by the halt, may have stopped some before this run read the bots: those that wanted
        # to run at the press count as running then.
        at_press = {int(pk) for pk in self.steps.run.bots_stopped or []}
        stopped = workers_wait(self.bots, pv=self.pv, revoked=self.revoked_by_then, running_at_press=at_press)
        self.steps.problems.extend(stopped.problems)
        self.workers_gone = stopped.workers_gone
        self.workers_stopped = stopped.stopped
        self.steps.count(workers_stopped=stopped.stopped)  # kept should this executor be lost
        return stopped.detail


@dataclass
class _Paper:
    """The paper bots' simulated orders: cancelled in the database at once, and again once the workers are gone."""

    bot_ids: list[int]
    steps: _Steps
    cancelled: int = 0
    verified: bool = False

    def cancel(self) -> str:
        done = paper_cancel_open(bot_ids=self.bot_ids, why=PAPER_WHY)
        self.cancelled += len(done)
        # On the report at once (the exchanges' cancel comes after this step and adds to it).
        self.steps.count(paper_orders_cancelled=self.cancelled, orders_cancelled=self.cancelled)
        return f"{len(done)} simulated order(s) cancelled for {len(self.bot_ids)} paper bot(s)"

    def verify(self, *, workers_gone: bool) -> str:
        """After the stop step: what a paper tick placed meanwhile is cancelled; "0 open" once the workers are gone."""
        if not self.bot_ids:
            self.verified = True
            return ""
        try:
            late = len(paper_cancel_open(bot_ids=self.bot_ids, why=PAPER_WHY))
        except Exception as exc:
            logger.exception("paper orders not checked")
            self.steps.problems.append(f"verify: paper orders not checked: {type(exc).__name__}"[:300])
            return "paper orders: unknown (not checked)"
        self.cancelled += late
        self.verified = workers_gone
        more = f", {late} more cancelled" if late else ""
        if not workers_gone:
            return f"paper orders: unknown (a worker may still place some{more})"
        return f"paper orders: 0 open{more}"


def affected_bots(run: KillRun) -> list[Bot]:
    """The run's bots: one, or every bot not archived (an archived bot is stopped with nothing open)."""
    qs = Bot.objects.select_related("account")
    if run.scope == KillRun.Scope.BOT:
        return list(qs.filter(pk=run.bot_id)) if run.bot_id is not None else []
    return list(qs.filter(archived_at__isnull=True))


def _claim(run_id: int) -> str | None:
    """Claim a pending run for this process; returns the claim, None if the run is not pending."""
    claim, now = uuid.uuid4().hex, timezone.now()
    claimed = KillRun.objects.filter(pk=run_id, status=KillRun.Status.PENDING).update(
        status=KillRun.Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        claim=claim,
        executor=executor_name(),
        attempts=1,
        problems=[],  # e.g. "not queued": moot now
    )
    return claim if claimed else None


def _lost(now: datetime) -> QuerySet[KillRun]:
    """Runs whose executor stopped renewing its lease, not yet given up: to be taken over."""
    return KillRun.objects.filter(
        status=KillRun.Status.RUNNING,
        heartbeat_at__lt=now - RUN_LEASE,
        started_at__gte=now - RUN_ABANDONED_AFTER,
        attempts__lt=RUN_MAX_ATTEMPTS,
    )


def _take_over(run_id: int) -> str | None:
    """Take over a run whose executor was lost; returns the new claim, None if the run is not such a run."""
    now = timezone.now()
    run = _lost(now).filter(pk=run_id).first()
    if run is None:
        return None
    claim, me = uuid.uuid4().hex, executor_name()
    note: dict[str, Any] = {
        "at": now.isoformat(),
        "by": me,
        "from": run.executor,
        "last_heartbeat": run.heartbeat_at.isoformat() if run.heartbeat_at else None,
        "steps_done": [step["name"] for step in run.steps],
        "orders_cancelled": run.orders_cancelled,
        "paper_orders_cancelled": run.paper_orders_cancelled,
        "workers_stopped": run.workers_stopped,
    }
    # Compare and swap on the lost executor's claim and last beat: of two pollers at once, one takes it over.
    taken = KillRun.objects.filter(
        pk=run.pk, status=KillRun.Status.RUNNING, claim=run.claim, heartbeat_at=run.heartbeat_at
    ).update(
        claim=claim,
        executor=me,
        heartbeat_at=now,
        started_at=now,
        attempts=F("attempts") + 1,
        takeovers=[*run.takeovers, note],
        steps=[],
        problems=[],
    )
    if not taken:
        return None
    logger.warning("kill run %s: its executor (%s) was lost; taken over and executed again", run.pk, run.executor)
    try:
        record(
            actor=ACTOR, action="killswitch.resumed_after_crash", target=run, data={**note, "attempt": run.attempts + 1}
        )
    except Exception:  # the kill goes on: its report says it was taken over
        logger.exception("kill run %s: takeover not audited", run.pk)
    run_publish(run, "taken_over", message=f"Kill switch: the run's executor was lost; {me} takes it over")
    return claim


def kill_execute(*, run_id: int, process_vault: vault.ProcessVault | None = None) -> KillRun:
    """Execute a pending kill run, or take over one whose executor was lost, and return it with its report.

    A run another executor holds (its lease renewed) is returned as is.
    """
    claim = _claim(run_id) or _take_over(run_id)
    if claim is None:
        return KillRun.objects.get(pk=run_id)
    return _execute_claimed(KillRun.objects.get(pk=run_id), claim, process_vault)


def _plan_flatten(run: KillRun, bots: list[Bot], targets: list[AccountTarget], steps: _Steps) -> int:
    try:
        flagged, sales = flatten_plan(run, bots)
    except Exception as exc:
        logger.exception("kill run %s: flatten not planned", run.pk)
        steps.problems.append(f"flatten: not planned: {type(exc).__name__}: {exc}"[:300])
        return 0
    for target in targets:
        target.flatten = sales.get(str(target.account.pk), [])
    return flagged


def _exchange_steps(
    run: KillRun,
    targets: list[AccountTarget],
    pv: vault.ProcessVault,
    steps: _Steps,
    processes: _Processes,
    paper_cancelled: int,
) -> tuple[list[AccountResult], list[StepDone]]:
    done: list[StepDone] = []
    results: list[AccountResult] = []

    def workers_gone() -> bool:
        steps.join_beside("stop", STOP_WAIT_S + 10)
        return processes.workers_gone

    def cancelled_now(step: StepDone, cancelled: int) -> None:
        # In a thread of the event loop's: the cancel step and its count on the report at once.
        processes.cancelled.set()
        try:
            name, ms, detail, finished = step
            # The count first: the step's announcement makes the report page read it.
            steps.count(orders_cancelled=cancelled + paper_cancelled)
            steps.add(name, ms, detail, finished)
        finally:
            connection.close()

    try:
        if targets:
            results = asyncio.run(exchanges_run(targets, pv, done, workers_gone, cancelled_now))
    except Exception as exc:
        logger.exception("kill run %s: exchange steps failed", run.pk)
        steps.problems.append(f"exchanges: {type(exc).__name__}: {exc}"[:300])
    finally:
        processes.cancelled.set()  # no account, or the loop failed: the revoke step waits no longer
    return results, done


def _record_exchange_steps(
    targets: list[AccountTarget], done: list[StepDone], flagged: int, steps: _Steps, started: float, paper_note: str
) -> None:
    shown = {s["name"] for s in steps.run.steps}  # the cancel step, stored while the loop ran
    for name, ms, detail, finished in done:
        if name == "verify" and paper_note:
            detail = f"{detail}; {paper_note}"[:300]
        if name != "flatten" and name not in shown:
            steps.add(name, ms, detail, finished)
    if flagged:
        flatten = next(((ms, at) for n, ms, _, at in done if n == "flatten"), None)
        sales: list[FlattenSale] = [sale for t in targets for sale in t.flatten]
        detail, problems = _flatten_outcome(sales) if sales else ("", [])
        steps.problems.extend(problems)
        steps.add(
            "flatten",
            flatten[0] if flatten else 0,
            detail or f"{flagged} bot(s) flagged; no position to sell",
            flatten[1] if flatten else None,
        )
    done_names = {name for name, *_ in done}
    for name in ("cancel", "verify", "balances"):
        if name not in done_names:
            detail = "no live accounts" if not targets else "not reached"
            if name == "verify" and paper_note:
                detail = f"{detail}; {paper_note}"
            steps.add(name, 0 if not targets else int((time.monotonic() - started) * 1000), detail)


def _execute_claimed(run: KillRun, claim: str, process_vault: vault.ProcessVault | None) -> KillRun:
    lease = _Lease(run.pk, claim).start()
    try:
        carried = run.takeovers[-1] if run.takeovers else {}
        figures = ("orders_cancelled", "paper_orders_cancelled", "workers_stopped")
        steps = _Steps(run=run, lease=lease, carried={name: int(carried.get(name) or 0) for name in figures})
        _execute_steps(run, steps, process_vault)
    finally:
        lease.stop()
    if lease.lost.is_set():
        return KillRun.objects.get(pk=run.pk)
    return run


def _execute_steps(run: KillRun, steps: _Steps, process_vault: vault.ProcessVault | None) -> None:
    bots = affected_bots(run)
    pv = process_vault or vault.from_settings()
    processes = _Processes(bots=bots, pv=pv, steps=steps)
    run_publish(run, "started", scope=run.scope, bot=run.bot_id, reason=run.reason)

    steps.begin_beside("revoke", processes.revoke)
    steps.begin_beside("stop", processes.stop)  # the fleet is not needed to cancel
    steps.begin_beside("purge", lambda: queues_purge(bots))
    paper = _Paper(bot_ids=[b.pk for b in bots if b.mode == Bot.Mode.PAPER], steps=steps)
    if paper.bot_ids:  # a step of its own only where there are paper bots
        steps.step("paper", paper.cancel)

    targets = account_targets(bots)
    flagged = _plan_flatten(run, bots, targets, steps)
    started = time.monotonic()
    results, done = _exchange_steps(run, targets, pv, steps, processes, paper.cancelled)
    if paper.bot_ids:
        steps.join_beside("stop", STOP_WAIT_S + 10)  # at once when the exchanges' verify waited for it already
    paper_note = paper.verify(workers_gone=processes.workers_gone)
    _record_exchange_steps(targets, done, flagged, steps, started, paper_note)
    steps.end_beside("revoke", REVOKE_WAIT_S)
    steps.end_beside("purge", PURGE_WAIT_S)
    steps.end_beside("stop", STOP_WAIT_S + 10)
    run.workers_stopped = processes.workers_stopped + steps.carried["workers_stopped"]
    if _report(run, targets, results, steps, workers_gone=processes.workers_gone, paper=paper):
        run_finish(run, len(bots), len(targets))
    else:
        logger.error("kill run %s: another executor holds the run now; this report is dropped", run.pk)


def _report(
    run: KillRun,
    targets: list[AccountTarget],
    results: list[AccountResult],
    steps: _Steps,
    *,
    workers_gone: bool,
    paper: _Paper,
) -> bool:
    """Write the report, under the executor's claim; False when another executor holds the run now."""
    for result in results:
        steps.problems.extend(result.problems)
    run.paper_orders_cancelled = paper.cancelled + steps.carried["paper_orders_cancelled"]
    run.orders_cancelled = sum(r.cancelled for r in results) + paper.cancelled + steps.carried["orders_cancelled"]
    run.orders_still_open = sum(r.still_open for r in results)
    # "0 still open" only when every account answered a check made after every worker had exited,
    # and the paper bots' orders were checked after that too.
    live_unknown = bool(targets) and (
        not workers_gone or len(results) != len(targets) or not all(r.verified for r in results)
    )
    run.open_unknown = live_unknown or not paper.verified
    answered = {str(t.account.pk): r for t, r in zip(targets, results, strict=False)}
    run.balances_after = {}
    for target in targets:
        answer = answered.get(str(target.account.pk))
        reached = answer is not None and answer.verified
        if not reached:
            steps.problems.append(f"{target.account.label}: not verified: its open orders are unknown"[:300])
        run.balances_after[str(target.account.pk)] = {
            "label": target.account.label,
            "total": answer.balances if answer else {},
            "free": answer.free if answer else {},
            "reached": reached,
            "still_open": answer.still_open if reached and answer else None,
        }
    run.problems = steps.problems
    if run.orders_still_open and not any("still open" in p for p in run.problems):
        run.problems.append(f"{run.orders_still_open} order(s) still open after {VERIFY_ATTEMPTS} retries")
    if run.open_unknown:
        run.problems.append("verify: open orders unknown (see the verify step); check the exchanges by hand")
    run.status = KillRun.Status.FAILED if run.problems else KillRun.Status.DONE
    run.finished_at = timezone.now()
    fields = (
        "status",
        "finished_at",
        "orders_cancelled",
        "paper_orders_cancelled",
        "workers_stopped",
        "orders_still_open",
        "open_unknown",
        "balances_after",
        "problems",
        "steps",
    )
    return bool(steps.lease.rows().update(**{name: getattr(run, name) for name in fields}))


def _flatten_outcome(sales: list[FlattenSale]) -> tuple[str, list[str]]:
    try:
        return flatten_record(sales)
    except Exception as exc:
        logger.exception("flatten results not recorded")
        detail = f"failed to record: {type(exc).__name__}: {exc}"[:300]
        return detail, [f"flatten: {detail}"]


def kill_runs_abandon(*, now: datetime | None = None) -> int:
    """Mark failed the runs given up: still "running" long after their last claim, or lost by too many executors.

    Their report is incomplete and nothing is verified: presses no longer join them, a resume no
    longer waits for them (services.active_runs), and the page says what happened.
    """
    now = now or timezone.now()
    abandoned = 0
    given_up = Q(started_at__lt=now - RUN_ABANDONED_AFTER) | Q(
        heartbeat_at__lt=now - RUN_LEASE, attempts__gte=RUN_MAX_ATTEMPTS
    )
    for run in KillRun.objects.filter(given_up, status=KillRun.Status.RUNNING):
        times = f" {run.attempts} times" if run.attempts > 1 else ""
        problem = (
            f"the process executing this run stopped{times} before it finished: nothing after its last step is verified"
        )
        # Under the claim it was found with: an executor taking it over meanwhile keeps it.
        changed = KillRun.objects.filter(pk=run.pk, status=KillRun.Status.RUNNING, claim=run.claim).update(
            status=KillRun.Status.FAILED,
            finished_at=now,
            open_unknown=True,
            problems=[*run.problems, problem],
            claim="",
        )
        if changed:
            abandoned += 1
            record(
                actor=ACTOR,
                action="killswitch.abandoned",
                target=run,
                data={"started_at": run.started_at, "attempts": run.attempts},
            )
    return abandoned


def kill_pending() -> int:
    """Execute every pending run and take over every run whose executor was lost, oldest first.

    Returns how many runs this call executed.
    """
    kill_runs_abandon()
    executed = 0
    runs = KillRun.objects.filter(Q(status=KillRun.Status.PENDING) | Q(pk__in=_lost(timezone.now()).values("pk")))
    for run_id, status in runs.order_by("created_at", "pk").values_list("pk", "status"):
        close_old_connections()
        claim = _claim(run_id) if status == KillRun.Status.PENDING else _take_over(run_id)
        if claim is not None:
            _execute_claimed(KillRun.objects.get(pk=run_id), claim, None)
            executed += 1
    return executed
