"""The bot tick: a short task that runs one strategy step and re-enqueues itself on `bot.<id>`.

Arguments are the bot id and the id of the tick chain started by this worker process: a tick
left over from an earlier process of the same bot (restored by the broker after a crash) carries
another chain id and is dropped, so one bot never runs two tick chains. Never a secret in args.

The chain outlives its backing services. With the database away a tick only queues the next one (the
bot is not known to be stopped; the gate refuses orders anyway). A next tick that cannot be queued (the
broker away), or one the broker loses (a delayed message is held by the worker, and dropped when its
connection to the broker breaks), would end the chain while the worker lives on: the tick keeper, a thread
of the worker, notices that no tick has run for TICK_STALL_S (or three intervals) and starts a new chain
under a new id, once the broker takes it; a tick of the old chain that turns up later is dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.db import DatabaseError

from apps.bots.models import Bot, bot_queue
from apps.exchanges import port
from apps.exchanges.services import key_rejection_note
from apps.trading import logs, runtime
from apps.trading.reconcile import reconcile
from apps.trading.tick import tick_run

logger = logging.getLogger(__name__)
RECONCILE_EVERY_TICKS = 20
# No tick for this long (or three tick intervals, if longer), none running: the chain was lost; start a new one.
# A false alarm costs nothing: the old chain's next tick, when it comes, is dropped.
TICK_STALL_S = 5.0
TICK_KEEPER_EVERY_S = 2.0


@shared_task(name="apps.trading.tasks.bot_tick_task", ignore_result=True)
def bot_tick_task(bot_id: int, chain: str | None = None) -> None:
    rt = runtime.current()
    if rt is None or rt.bot_id != bot_id or chain != rt.chain:
        logger.info("bot %s: dropping a tick that is not this worker's (chain %s)", bot_id, chain)
        return
    assert chain is not None
    with rt.tick_lock:
        rt.ticking, rt.last_tick = True, time.monotonic()
    try:
        again = _tick(rt, bot_id)
    finally:
        with rt.tick_lock:
            rt.ticking, rt.last_tick = False, time.monotonic()
    if again:
        _queue_next(rt, chain, countdown=rt.tick_interval_s)
    else:
        rt.ticks_ended = True


def _tick(rt: runtime.Runtime, bot_id: int) -> bool:
    """Run one tick; False when the bot is not to run any more (its ticks stop)."""
    try:
        bot = Bot.objects.select_related("account").filter(pk=bot_id).first()
    except DatabaseError as exc:
        # Not known to be stopped: tick on (the gate, which reads the database, lets no order through meanwhile).
        logger.warning(
            "bot %s: database unavailable (%s); ticking again in %s s", bot_id, type(exc).__name__, rt.tick_interval_s
        )
        return True
    if bot is None or bot.desired_state != Bot.Desired.RUNNING or bot.halted:
        logger.info("bot %s: not running any more; ticks stop", bot_id)
        return False
    rt.tick_interval_s = bot.tick_interval_s
    exchange = runtime.get_exchange()
    try:
        result = tick_run(bot=bot, exchange=exchange)
        if result.generation % RECONCILE_EVERY_TICKS == 0:
            # Besides the reconciliation at worker start: a stolen key is found while the bot runs.
            reconcile(bot=bot, exchange=exchange)
    except Exception as exc:
        # Error kind only: exchange errors may quote request details; the next tick retries.
        logger.warning("bot %s: tick failed (%s)", bot_id, type(exc).__name__)
        if isinstance(exc, port.KeyRejected | port.PermissionRefused):
            key_rejection_note(account_id=bot.account_id, bot_id=bot.pk, error=exc)  # the auth-errors breaker
    return True


def _queue_next(rt: runtime.Runtime, chain: str, *, countdown: float = 0) -> bool:
    """Queue the chain's next tick on the bot's own queue; False (logged) when the broker does not take it."""
    try:
        bot_tick_task.apply_async(
            args=(rt.bot_id,), kwargs={"chain": chain}, queue=bot_queue(rt.bot_id), countdown=countdown
        )
    except Exception as exc:  # kombu's OperationalError and the like: the tick keeper tries again
        logger.warning("bot %s: could not queue its next tick (%s)", rt.bot_id, type(exc).__name__)
        return False
    return True


def _first_tick(rt: runtime.Runtime) -> None:
    bot = Bot.objects.select_related("account").get(pk=rt.bot_id)
    rt.tick_interval_s = bot.tick_interval_s
    try:
        if rt.exchange is not None:
            reconcile(bot=bot, exchange=rt.exchange)
    except Exception as exc:  # a failed reconcile must not stop the bot from starting
        logger.warning("bot %s: reconcile at start failed (%s)", bot.pk, type(exc).__name__)
    rt.last_tick = time.monotonic()
    _queue_next(rt, rt.chain)
    _start_tick_keeper(rt)


def tick_stalled(rt: runtime.Runtime, now: float) -> bool:
    """No tick running, none for TICK_STALL_S (or three intervals, if longer), and ticks not ended on purpose."""
    overdue = max(TICK_STALL_S, 3 * rt.tick_interval_s)
    return not rt.ticking and not rt.ticks_ended and now - rt.last_tick > overdue


def tick_chain_restart(rt: runtime.Runtime) -> bool:
    """Start a new tick chain under a new id if the current one stalled; True when one was queued."""
    with rt.tick_lock:
        stalled_s = time.monotonic() - rt.last_tick
        if not tick_stalled(rt, time.monotonic()):
            return False
        # A new id first: the old chain's tick, should the broker still deliver it, is dropped.
        rt.chain = uuid.uuid4().hex
        if not _queue_next(rt, rt.chain):
            return False
        rt.last_tick = time.monotonic()
    logger.warning(
        "bot %s: no tick for %.0f s (its next tick was lost); started a new tick chain", rt.bot_id, stalled_s
    )
    return True


def _start_tick_keeper(rt: runtime.Runtime) -> None:
    def keep() -> None:
        while not rt.stop.wait(TICK_KEEPER_EVERY_S):
            if rt.ticks_ended:
                return
            tick_chain_restart(rt)

    threading.Thread(target=keep, name=f"bot-{rt.bot_id}-tick-keeper", daemon=True).start()


@worker_ready.connect
def _on_worker_ready(**_: Any) -> None:
    raw = os.environ.get("BOT_ID")
    if not raw:
        return  # the control worker and others: not a bot
    bot_id = int(raw)
    # First, so the bot page shows how its worker started (or why it refused to).
    logs.bot_log_install(bot_id=bot_id)
    _first_tick(runtime.worker_start(bot_id))


@worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    runtime.worker_stop()
    logs.bot_log_uninstall()  # after the stop's own lines: they are stored too


@shared_task(name="apps.trading.tasks.bot_log_purge_task", ignore_result=True)
def bot_log_purge_task() -> None:
    """Beat, on the control queue: delete bot log lines past their retention (BOT_LOG_RETENTION_DAYS)."""
    logs.bot_log_purge()
