"""Control-worker tasks for the kill switch, and the database poller that runs kills without a broker."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from celery import shared_task
from celery.signals import worker_init, worker_process_init, worker_ready
from django.db import connection
from django.db.models import Count

from apps.alerts.webhook import webhook_deliver_start
from apps.bots.wakeup import KILL_CHANNEL, Wakeup
from apps.core.periodic import run_every
from apps.core.workers import consumes_control_queue
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.port.aio import MARKETS_FRESH_S, markets_kept, markets_warm, spares_keep
from apps.killswitch.models import KillRun
from apps.killswitch.runner import kill_execute, kill_pending

logger = logging.getLogger(__name__)

POLL_EVERY_S = 1.0
# The control worker's start waits at most this long for the exchanges' markets (an exchange that does not
# answer only means the first kill loads them itself, as it always did).
WARM_WAIT_S = 5.0
# How often a control worker's process looks for an exchange whose markets it does not hold (a new account's).
WARM_EVERY_S = 10.0
_control = threading.Event()  # set in a control worker's main process before its pool forks
_poller_started = threading.Event()


@shared_task
def kill_execute_task(run_id: int) -> str:
    if not KillRun.objects.filter(pk=int(run_id)).exists():  # e.g. a stale message after a database reset
        return "missing"
    return str(kill_execute(run_id=int(run_id)).status)


@shared_task
def kill_pending_task() -> int:
    return kill_pending()


def _poll_once() -> None:
    kill_pending()
    webhook_deliver_start()  # posts due alerts in its own thread; never waits here


def _poll_forever(stop: threading.Event, every_s: float = POLL_EVERY_S) -> None:
    """Execute pending runs every `every_s`, and at once when one is recorded (PostgreSQL NOTIFY on commit): the
    broker's message comes later, and finds the run taken (kill_execute returns it as it is)."""
    wakeup = Wakeup(KILL_CHANNEL, "kill poller")
    wakeup.listen()
    try:
        run_every(stop, every_s, _poll_once, "kill poller", wait=lambda s: wakeup.wait(s, stop))
    finally:
        wakeup.close()


def start_poller(stop: threading.Event | None = None) -> threading.Thread | None:
    """Start the pending-kill poller once per process; returns the thread (None if already started)."""
    if _poller_started.is_set():
        return None
    _poller_started.set()
    thread = threading.Thread(target=_poll_forever, args=(stop or threading.Event(),), name="kill-poller", daemon=True)
    thread.start()
    return thread


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    # Only the control worker executes kills; bot workers (queue bot.<id>) must not.
    if sender is not None and consumes_control_queue(sender):
        start_poller()
        _keep_warm_start()  # the poller executes kills in this process
        logger.info("kill poller started: pending kill runs are executed even without the broker")


def markets_warm_now(timeout: float = WARM_WAIT_S) -> str:
    """Load the public markets of the exchanges accounts are on that this process does not hold (or holds old), and
    hold a spare client (no key) per account for the next kill (apps.exchanges.port.aio.spares_keep)."""
    started = time.monotonic()
    try:
        per_exchange = dict(
            ExchangeAccount.objects.values("exchange_id").annotate(n=Count("pk")).values_list("exchange_id", "n")
        )
    finally:
        connection.close()  # before a pool forks, and between two looks: no connection held
    if not per_exchange:
        return "no exchange account"
    ids = [i for i in per_exchange if not markets_kept(i, within_s=MARKETS_FRESH_S / 2)]
    failed: list[str] = []
    if ids:
        try:
            failed = asyncio.run(asyncio.wait_for(markets_warm(ids), timeout))
        except TimeoutError:
            failed = ids
    built = sum(spares_keep(i, n) for i, n in per_exchange.items() if i not in failed)
    took = time.monotonic() - started
    loaded = f"markets of {len(ids) - len(failed)} of {len(ids)} exchange(s) loaded" if ids else "markets held"
    return f"{loaded}, {built} spare client(s) built in {took:.1f} s"


def _keep_warm(stop: threading.Event, every_s: float = WARM_EVERY_S) -> None:
    run_every(stop, every_s, lambda: logger.debug("kill: %s", markets_warm_now()), "kill markets")


def _keep_warm_start() -> None:
    threading.Thread(target=_keep_warm, args=(threading.Event(),), name="kill-markets", daemon=True).start()


@worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    # Before the pool forks its children: they inherit the markets, and a kill starts with its cancels.
    if sender is not None and consumes_control_queue(sender):
        _control.set()
        try:
            logger.info("kill: %s", markets_warm_now())
        except Exception:  # a kill loads the markets itself
            logger.warning("kill: markets not loaded at start", exc_info=True)


@worker_process_init.connect
def _on_worker_process_init(**_: Any) -> None:
    # A control worker's pool process executes queued kills: it keeps the markets of new accounts' exchanges too.
    if _control.is_set():
        _keep_warm_start()
