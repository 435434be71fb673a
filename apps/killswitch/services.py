"""The kill switch: halt first (in the database), then let the control worker clean up and report.

`kill_press` is what the panic button, a per-bot emergency stop and `manage.py killswitch` call
(`kill_request`, for circuit breakers and scripts, returns the run). It commits the halt before
anything else, so the order gate refuses every order from that moment, whatever happens to Redis,
the workers or the exchanges afterwards. Nothing about the press can stop the halt: the reason is
cleaned and cut (apps.core.text), never refused, and whatever fails after the halt (recording
the run, the audit entry, queueing it) is reported to the caller, the halt staying in place.

Presses and resumes are serialized by one PostgreSQL advisory lock (KILL_LOCK_KEY, taken before the
halt row and the bot rows, in that order everywhere): a press that finds a kill run of its scope
pending or running joins it instead of starting a second one, so concurrent presses make one run
with true counts; a resume sees every run a press has recorded.

Resume (`trading_resume`) is one transaction: the halt cleared and its audit entry with the reason,
or neither; the bots the kill stopped that the operator kept checked are started in it (each by
bot_start), under the same lock, so a press either precedes the resume or stops them again after it.
It is refused while a kill run is pending or running or a bot worker is still alive.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

from django.db import DatabaseError, connection, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.services import record
from apps.bots.halts import global_halt_clear, global_halt_lock, global_halt_set
from apps.bots.models import Bot
from apps.bots.services import bot_start
from apps.bots.wakeup import KILL_CHANNEL, halt_notify, notify
from apps.core.exceptions import ApplicationError
from apps.core.text import reason_changed, reason_clean, resume_reason_problem
from apps.killswitch.models import RUN_ABANDONED_AFTER, KillRun
from apps.killswitch.selectors import bots_to_restart
from apps.killswitch.tasks import kill_execute_task

logger = logging.getLogger(__name__)
Actor = User | str

KILL_LOCK_KEY = 0x6B696C6C  # "kill": serializes presses (run join or create) and resumes
RUN_REASON_MAX = 500  # KillRun.reason
BOT_HALT_REASON_MAX = 300  # Bot.halt_reason
# What the fleet reports while a bot's worker process may still exist (error: it exited).
WORKER_ALIVE = (Bot.Observed.STARTING, Bot.Observed.RUNNING, Bot.Observed.STOPPING)


@dataclass
class KillPress:
    """What one press did: the run it started or joined (None if it could not be recorded) and what failed."""

    run: KillRun | None
    reason: str
    joined: bool = False
    failures: list[str] = field(default_factory=list)


class ResumeRefused(ApplicationError):
    """The state does not allow a resume now (nothing halted, a kill still running, a worker alive)."""


def active_runs() -> QuerySet[KillRun]:
    """Kill runs not finished yet: pending, or running and not abandoned."""
    claimed_since = timezone.now() - RUN_ABANDONED_AFTER
    return KillRun.objects.filter(
        Q(status=KillRun.Status.PENDING) | Q(status=KillRun.Status.RUNNING, started_at__gte=claimed_since)
    )


@contextlib.contextmanager
def _press_lock() -> Iterator[None]:
    # Session-level: held across the halt's transaction and the run's, released right after (and by
    # PostgreSQL itself if this process dies meanwhile).
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [KILL_LOCK_KEY])
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [KILL_LOCK_KEY])
        except DatabaseError:
            logger.warning("kill switch lock not released: the database session is gone, and the lock with it")


def _halt(*, actor: Actor, reason: str, bot: Bot | None) -> list[int]:
    """The safety effect, committed on its own before anything else is attempted.

    Returns the bots it told to stop (they wanted to run): the run keeps them so a resume can offer
    to start exactly those again.
    """
    with transaction.atomic():
        if bot is None:
            global_halt_set(reason=reason, actor=actor)  # waits for any order in flight
            # A start waits for the halt row locked above and then refuses: nobody joins this list meanwhile.
            wanted = Bot.objects.select_for_update().exclude(desired_state=Bot.Desired.STOPPED)
            stopped = sorted(wanted.values_list("pk", flat=True))
            Bot.objects.filter(pk__in=stopped).update(desired_state=Bot.Desired.STOPPED)
            return stopped
        halt_reason = reason_clean(f"Stopped by kill: {reason}", max_length=BOT_HALT_REASON_MAX)
        was_running = Bot.objects.select_for_update().filter(pk=bot.pk).exclude(desired_state=Bot.Desired.STOPPED)
        stopped = list(was_running.values_list("pk", flat=True))
        # A bot already halted keeps its first halt (and its figures): that is the one an admin clears.
        Bot.objects.filter(pk=bot.pk, halted=False).update(
            halted=True,
            halt_reason=halt_reason,
            halt_kind=Bot.HaltKind.EMERGENCY,
            halted_by=(actor if isinstance(actor, str) else f"{actor.get_username()} (emergency stop)")[:150],
            halted_at=timezone.now(),
            halt_data={"reason": "emergency_stop", "stop_reason": halt_reason},
        )
        Bot.objects.filter(pk=bot.pk).update(desired_state=Bot.Desired.STOPPED)
        halt_notify(f"bot {bot.pk}")  # its fleet supervisor stops the worker at once, on commit
        return stopped


def _join_or_create(
    *, actor: Actor, reason: str, bot: Bot | None, via: str, stopped: list[int]
) -> tuple[KillRun, bool]:
    runs = active_runs()
    runs = (
        runs.filter(scope=KillRun.Scope.ALL)
        if bot is None
        else runs.filter(Q(scope=KillRun.Scope.ALL) | Q(scope=KillRun.Scope.BOT, bot=bot))
    )
    # An all-bots run covers a per-bot press too; "all" sorts before "bot".
    existing = runs.order_by("scope", "created_at", "pk").first()
    if existing is not None:
        if set(stopped) - set(existing.bots_stopped):
            existing.bots_stopped = sorted({*existing.bots_stopped, *stopped})
            existing.save(update_fields=["bots_stopped"])
        return existing, True
    run = KillRun.objects.create(
        bots_stopped=stopped,
        scope=KillRun.Scope.BOT if bot else KillRun.Scope.ALL,
        bot=bot,
        reason=reason,
        requested_by=actor if isinstance(actor, User) else None,
        requested_via=via[:10],
    )
    notify(KILL_CHANNEL, f"run {run.pk}")  # the control workers' pollers take it on commit; the queue may be late
    return run, False


def _failure(what: str, exc: BaseException) -> str:
    # The exception's kind only: its text may quote SQL or data, and this is shown on a page.
    return f"{what} ({type(exc).__name__}); trading stays halted."


def _record(
    press: KillPress,
    *,
    actor: Actor,
    bot: Bot | None,
    via: str,
    request: HttpRequest | None,
    changed: bool,
    stopped: list[int],
) -> None:
    with transaction.atomic():
        try:
            with transaction.atomic():
                press.run, press.joined = _join_or_create(
                    actor=actor, reason=press.reason, bot=bot, via=via, stopped=stopped
                )
        except Exception as exc:
            logger.exception("kill pressed and halt committed, but the kill run was not recorded")
            what = "The kill run could not be recorded, so no order is cancelled yet: run `manage.py killswitch`"
            press.failures.append(_failure(what, exc))
        data: dict[str, object] = {
            "scope": KillRun.Scope.BOT if bot else KillRun.Scope.ALL,
            "bot": bot.pk if bot else None,
            "reason": press.reason,
            "via": via,
            "run": press.run.pk if press.run else None,
            "bots_stopped": stopped,
        }
        if press.joined and press.run is not None:
            data["joined_run"] = press.run.pk
        if changed:
            data["reason_cleaned"] = True  # control or invisible characters removed, or cut to the column
        try:
            with transaction.atomic():
                record(actor=actor, action="killswitch.pressed", target=press.run, request=request, data=data)
        except Exception as exc:
            logger.exception("kill pressed and halt committed, but the press was not audited")
            press.failures.append(_failure("The press could not be written to the audit log", exc))


def kill_press(
    *, actor: Actor, reason: str, bot: Bot | None = None, via: str = "web", request: HttpRequest | None = None
) -> KillPress:
    """Halt (everything, or one bot) and start or join the kill run that cleans up. Never refuses a reason."""
    cleaned = reason_clean(reason, max_length=RUN_REASON_MAX)
    press = KillPress(run=None, reason=cleaned)
    with _press_lock():
        stopped = _halt(actor=actor, reason=cleaned, bot=bot)  # raises only if the database itself fails
        try:
            changed = reason_changed(reason, cleaned)
            _record(press, actor=actor, bot=bot, via=via, request=request, changed=changed, stopped=stopped)
        except Exception as exc:  # e.g. the commit itself failed: the halt above is committed already
            logger.exception("kill pressed and halt committed, but what followed was not committed")
            press.run, press.joined = None, False
            press.failures.append(_failure("The kill run and its audit entry could not be committed", exc))
    if press.run is not None and not press.joined:
        run_id = press.run.pk
        transaction.on_commit(lambda: _enqueue_soon(run_id))
    return press


def kill_request(
    *, actor: Actor, reason: str, bot: Bot | None = None, via: str = "web", request: HttpRequest | None = None
) -> KillRun:
    """`kill_press` for callers that need the run (circuit breakers, scripts): raises if it was not recorded."""
    press = kill_press(actor=actor, reason=reason, bot=bot, via=via, request=request)
    if press.run is None:
        raise ApplicationError(" ".join(press.failures) or "The kill run could not be recorded; trading stays halted.")
    return press.run


def _enqueue_soon(run_id: int) -> None:
    # In a thread: with the broker down, queueing blocks for seconds, and the operator's page must not
    # wait for it (the halt is already committed; the control worker's poller picks the run anyway).
    try:
        threading.Thread(target=_enqueue, args=(run_id,), name=f"kill-{run_id}-queue", daemon=True).start()
    except RuntimeError as exc:
        logger.warning("kill run %s not queued (%s); the control worker picks it from the database", run_id, exc)


def _enqueue(run_id: int) -> None:
    # With the broker down the run stays pending in the database; the control worker's poller (and
    # `manage.py killswitch`) execute pending runs without Redis. The run's page says so meanwhile.
    try:
        kill_execute_task.apply_async(args=(run_id,), retry=False)
    except Exception as exc:
        logger.warning(
            "kill run %s not queued (%s); the control worker picks it from the database", run_id, type(exc).__name__
        )
        note = (
            f"queue: not queued ({type(exc).__name__}: the broker did not answer); the control worker's poller "
            "runs it from the database"
        )
        try:
            KillRun.objects.filter(pk=run_id, status=KillRun.Status.PENDING).update(problems=[note[:300]])
        except DatabaseError:
            logger.warning("kill run %s: the queueing problem was not noted", run_id)
    finally:
        connection.close()  # this thread's own database connection


def _alive_workers() -> list[tuple[int, str, str]]:
    alive = Bot.objects.filter(observed_state__in=WORKER_ALIVE).order_by("pk")
    return list(alive.values_list("pk", "name", "observed_state"))


@dataclass
class ResumeOutcome:
    """What a resume did besides lifting the halt: the bots it started again, and those that may not start."""

    started: list[Bot] = field(default_factory=list)
    refused: list[tuple[Bot, str]] = field(default_factory=list)


def trading_resume(
    *, actor: User, reason: str, restart: Collection[int] = (), request: HttpRequest | None = None
) -> ResumeOutcome:
    """Lift the global halt, with its audit entry, in one transaction; optionally start bots the kill stopped.

    Refused (ResumeRefused, nothing changed or audited) when nothing is halted, while a kill run is
    pending or running, or while any bot worker is still alive (the fleet has not reported it stopped).
    `restart` names bots to start again: each must be one the kills of this halt stopped (selectors.
    bots_to_restart), else nothing changes. Each start is apps.bots.services.bot_start (its checks, its
    audit entry), inside the resume's transaction and under the kill lock: a press waits for the
    resume and then stops them again, so no bot ever runs under a halt. A bot that may not start is
    reported in the outcome (and the resume's audit entry); the others start.
    """
    if not actor.has_perm("accounts.resume_after_kill"):
        raise ApplicationError("Only an admin can resume trading after a kill.")
    problem = resume_reason_problem(reason)
    if problem is not None:
        raise ApplicationError(problem)
    try:
        return _resume(actor=actor, reason=reason.strip(), restart=set(restart), request=request)
    except DatabaseError as exc:  # rolled back whole: no resume without its audit entry
        logger.exception("resume not committed")
        raise ResumeRefused(
            f"The resume could not be recorded ({type(exc).__name__}). Nothing was changed: trading stays halted."
        ) from None


def _restart(bots: list[Bot], *, actor: User, request: HttpRequest | None) -> ResumeOutcome:
    outcome = ResumeOutcome()
    for bot in bots:
        try:
            with transaction.atomic():  # a refused start undoes only itself
                bot_start(bot=bot, actor=actor, request=request)
        except ApplicationError as exc:
            outcome.refused.append((bot, exc.message))
        else:
            outcome.started.append(bot)
    return outcome


def _resume(*, actor: User, reason: str, restart: set[int], request: HttpRequest | None) -> ResumeOutcome:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [KILL_LOCK_KEY])
        halt = global_halt_lock()  # a second resume waits here, then finds nothing to resume
        if not halt.active:
            raise ResumeRefused("Trading is not halted: there is nothing to resume.")
        running = list(active_runs().order_by("created_at", "pk"))
        if running:
            runs = ", ".join(f"#{r.pk} ({r.get_status_display().lower()})" for r in running)
            raise ResumeRefused(
                f"A kill is still in progress (run {runs}): resume once its report says every order is "
                "cancelled and verified. Nothing was changed."
            )
        alive = _alive_workers()
        if alive:
            named = ", ".join(f"{name} (#{pk}, {state})" for pk, name, state in alive[:10])
            more = f" and {len(alive) - 10} more" if len(alive) > 10 else ""
            raise ResumeRefused(
                f"{len(alive)} bot worker(s) still alive: {named}{more}. The fleet supervisor must report them "
                "stopped before trading resumes. Nothing was changed."
            )
        offered = {b.pk: b for b in bots_to_restart(halt)}
        unknown = sorted(restart - offered.keys())
        if unknown:
            raise ApplicationError(
                f"Bot(s) {', '.join(f'#{pk}' for pk in unknown)} were not stopped by this halt's kill, so they are "
                "not restarted from here. Nothing was changed."
            )
        since, previous = halt.since, halt.reason
        global_halt_clear(actor=actor)
        outcome = _restart([offered[pk] for pk in sorted(restart)], actor=actor, request=request)
        record(
            actor=actor,
            action="killswitch.resumed",
            target=halt,
            request=request,
            data={
                "reason": reason,
                "previous_reason": previous,
                "halted_since": since.isoformat() if since else None,
                "offered": sorted(offered),
                "restarted": [b.pk for b in outcome.started],
                "not_restarted": {str(b.pk): why for b, why in outcome.refused},
            },
        )
    return outcome
