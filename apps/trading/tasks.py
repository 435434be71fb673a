"""The bot tick: a short task that runs one strategy step and re-enqueues itself on `bot.<id>`.

Arguments are the bot id and the id of the tick chain started by this worker process: a tick
left over from an earlier process of the same bot (restored by the broker after a crash) carries
another chain id and is dropped, so one bot never runs two tick chains. Never a secret in args.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown

from apps.bots.models import Bot
from apps.exchanges import port
from apps.exchanges.services import key_rejection_note
from apps.trading import logs, runtime
from apps.trading.reconcile import reconcile
from apps.trading.tick import tick_run

logger = logging.getLogger(__name__)
RECONCILE_EVERY_TICKS = 20


@shared_task(name="apps.trading.tasks.bot_tick_task", ignore_result=True)
def bot_tick_task(bot_id: int, chain: str | None = None) -> None:
    rt = runtime.current()
    if rt is None or rt.bot_id != bot_id or chain != rt.chain:
        logger.info("bot %s: dropping a tick that is not this worker's (chain %s)", bot_id, chain)
        return
    bot = Bot.objects.select_related("account").filter(pk=bot_id).first()
    if bot is None or bot.desired_state != Bot.Desired.RUNNING or bot.halted:
        logger.info("bot %s: not running any more; ticks stop", bot_id)
        return
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
    bot_tick_task.apply_async(args=(bot_id,), kwargs={"chain": chain}, queue=bot.queue, countdown=bot.tick_interval_s)


def _first_tick(rt: runtime.Runtime) -> None:
    bot = Bot.objects.select_related("account").get(pk=rt.bot_id)
    try:
        if rt.exchange is not None:
            reconcile(bot=bot, exchange=rt.exchange)
    except Exception as exc:  # a failed reconcile must not stop the bot from starting
        logger.warning("bot %s: reconcile at start failed (%s)", bot.pk, type(exc).__name__)
    bot_tick_task.apply_async(args=(bot.pk,), kwargs={"chain": rt.chain}, queue=bot.queue)


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
