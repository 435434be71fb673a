"""The kill's work on the exchanges: cancel every open order on every affected account at once, check again once
the last worker is gone, flatten where an admin asked for it, read the balances.

All accounts at once in one event loop, through the exchange port's AsyncSession (one HTTP session, markets
loaded once per exchange). Each account's secret is read from Vault by the control worker and lives only in
its client for the duration of the run. An exchange that refuses for now (429, 5xx) or times out is asked
again: the port retries each call, and the kill asks again for up to KILL_CANCEL_PATIENCE_S per account; the
cancel and verify steps say how many requests the exchange refused or failed and how long cancels were retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TypeVar
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.bots.models import Bot
from apps.exchanges import port
from apps.exchanges.models import ExchangeAccount
from apps.killswitch.flatten import FLATTEN_TAG, FlattenSale, account_flatten
from apps.trading import events
from apps.trading.models import Order
from apps.trading.sync import order_apply_exchange
from apps.vault import client as vault

logger = logging.getLogger(__name__)
VERIFY_ATTEMPTS = 3
KILL_THREADS = 64
RETRY_PAUSE_S = 0.5
StepDone = tuple[str, int, str, datetime]
T = TypeVar("T")


@dataclass
class AccountTarget:
    account: ExchangeAccount
    symbols: list[str]
    flatten: list[FlattenSale] = field(default_factory=list)


@dataclass
class AccountResult:
    label: str
    cancelled: int = 0
    still_open: int = 0
    balances: dict[str, str] = field(default_factory=dict)  # asset: total held
    free: dict[str, str] = field(default_factory=dict)  # asset: of that total, not held by an order
    problems: list[str] = field(default_factory=list)
    recorded: int = 0  # of the cancelled orders, those that were ours (written and announced as cancelled)
    cancel_ms: int = 0
    verified: bool = False  # every symbol of the account answered the final check
    troubles: int = 0  # requests the exchange refused or failed (429, 5xx, timeouts), each retried
    delayed_s: float = 0.0  # the longest a listing or cancel took because of them, retries included
    patient_until: float | None = None  # time.monotonic() after which a failing call is not asked again
    # The cancel counted what the exchange's answer named: our rows the final check finds cancelled, not named
    # in it (its answer was lost), count as cancelled too.
    count_settled: bool = False

    def problem(self, what: str, exc: Exception) -> None:
        reason = exc.message if isinstance(exc, port.ExchangeError) else f"{type(exc).__name__}: {exc}"
        self.problems.append(f"{self.label}: {what}: {reason}"[:300])


def orders_cancelled_record(account_id: UUID, symbol: str, cancelled: list[port.RemoteOrder]) -> int:
    """Our orders among those the kill cancelled on an account: written cancelled and announced now.

    Called from the kill's event loop in a worker thread, once every cancel of the kill is answered: the live
    feed and the order pages show the cancellations as the kill makes them, not when a later sync finds them.
    """
    ids = [o.id for o in cancelled if o.id]
    client_ids = [o.client_order_id for o in cancelled if o.client_order_id]
    if not ids and not client_ids:
        return 0
    try:
        ours = Order.objects.filter(
            Q(exchange_order_id__in=ids) | Q(client_order_id__in=client_ids),
            bot__account_id=account_id,
            paper=False,
            symbol=symbol,
            status__in=Order.OPEN_STATUSES,
        )
        # One transaction for the account's symbol: one UPDATE, and one announcement of all the events (not a
        # round trip per order: fifty orders took a second under a kill's load). The rows are locked and read
        # again as they are once locked: one a sync saw filled meanwhile is no longer open, and stays as it is.
        with transaction.atomic():
            orders = list(ours.select_for_update(of=("self",)))
            now = timezone.now()
            Order.objects.filter(pk__in=[o.pk for o in orders]).update(status=Order.Status.CANCELED, updated_at=now)
            for order in orders:
                order.status, order.updated_at = Order.Status.CANCELED, now
                events.order_update(order)
        return len(orders)
    finally:
        connection.close()  # this worker thread's own connection: the kill's loop lends threads briefly


def account_targets(bots: Iterable[Bot]) -> list[AccountTarget]:
    """Accounts with at least one live bot, and the symbols their live bots trade."""
    targets: dict[str, AccountTarget] = {}
    for bot in bots:
        if bot.mode != Bot.Mode.LIVE:
            continue
        target = targets.setdefault(str(bot.account_id), AccountTarget(bot.account, []))
        for symbol in bot.symbols:
            if symbol not in target.symbols:
                target.symbols.append(symbol)
    return list(targets.values())


Cancelled = list[tuple[str, list[port.RemoteOrder]]]  # per symbol, the orders a cancel took off the book


async def _account_cancel(
    target: AccountTarget, pv: vault.ProcessVault, session: port.AsyncSession
) -> tuple[AccountResult, port.AsyncExchange | None, Cancelled]:
    result = AccountResult(label=target.account.label)
    started = time.monotonic()
    try:
        secret = await asyncio.to_thread(pv.kv_read, target.account.vault_path)
        exchange = session.exchange(
            exchange_id=target.account.exchange_id, credentials={k: str(v) for k, v in secret.items()}
        )
        await exchange.load_markets(target.symbols)  # kept from an earlier run or the control worker's start
    except Exception as exc:
        result.problem("no client", exc)
        return result, None, []

    async def cancel(symbol: str) -> tuple[str, list[port.RemoteOrder]]:
        try:
            if exchange.cancel_all_names_orders:  # one request: its answer names what it cancelled
                # If an answer is lost, the cancel-all asked again (by us, or silently by the HTTP client: DELETE
                # is idempotent) answers "nothing open" for the orders the first one cancelled: the final check
                # then counts our rows it finds cancelled, so they are never reported as zero.
                result.count_settled = True
                named = await _patiently(result, exchange, partial(exchange.cancel_all_named, symbol))
                result.cancelled += len(named)
                return symbol, named
            listed = await _patiently(result, exchange, partial(exchange.open_orders, symbol))
            if listed:
                await _patiently(result, exchange, partial(exchange.cancel_all, symbol))
                result.cancelled += len(listed)
            return symbol, listed
        except Exception as exc:
            result.problem(f"cancel {symbol}", exc)
            return symbol, []

    # Every symbol of the account at once: one cancel-all each, within the exchange's limits.
    cancelled = await asyncio.gather(*(cancel(symbol) for symbol in target.symbols))
    result.cancel_ms = int((time.monotonic() - started) * 1000)
    result.troubles = exchange.troubles
    return result, exchange, cancelled


async def _patiently(result: AccountResult, exchange: port.AsyncExchange, fn: Callable[[], Awaitable[T]]) -> T:
    """`fn()`, asked again while the exchange is unavailable, until KILL_CANCEL_PATIENCE_S after the account's
    first failure; notes how long the exchange delayed it."""
    started, troubles = time.monotonic(), exchange.troubles
    while True:
        try:
            value = await fn()
            break
        except port.ExchangeUnavailable:
            now = time.monotonic()
            if result.patient_until is None:
                result.patient_until = now + float(settings.KILL_CANCEL_PATIENCE_S)
            if now >= result.patient_until:
                raise
            await asyncio.sleep(RETRY_PAUSE_S)
    if exchange.troubles > troubles:
        result.delayed_s = max(result.delayed_s, time.monotonic() - started)
    return value


def exchange_delay_note(results: Iterable[AccountResult], *, troubles_before: int = 0) -> str:
    """What a step's detail adds when the exchange refused or delayed requests (since `troubles_before`), else ""."""
    results = list(results)
    troubles = sum(r.troubles for r in results) - troubles_before
    if troubles <= 0:
        return ""
    delayed = max((r.delayed_s for r in results), default=0.0)
    return f"; the exchange refused or delayed {troubles} request(s); cancels retried for {delayed:.1f} s"


async def _record(target: AccountTarget, result: AccountResult, symbol: str, cancelled: list[port.RemoteOrder]) -> None:
    if not cancelled:
        return
    try:
        result.recorded += await asyncio.to_thread(orders_cancelled_record, target.account.pk, symbol, cancelled)
    except Exception as exc:  # the exchange's cancel stands; a later sync writes our rows
        logger.exception("kill: cancelled orders of %s not recorded", target.account.label)
        result.problem(f"record cancelled {symbol}", exc)


async def _account_verify(target: AccountTarget, result: AccountResult, exchange: port.AsyncExchange) -> None:
    still_open = 0
    result.verified = True
    for symbol in target.symbols:
        try:
            listed = await _patiently(result, exchange, partial(exchange.open_orders, symbol))
            for _ in range(VERIFY_ATTEMPTS):
                if not listed:
                    break
                await _patiently(result, exchange, partial(exchange.cancel_all, symbol))
                before, listed = listed, await _patiently(result, exchange, partial(exchange.open_orders, symbol))
                left = {o.id for o in listed}
                gone = [o for o in before if o.id not in left]
                result.cancelled += len(gone)
                await _record(target, result, symbol, gone)
            still_open += len(listed)
            if not listed:
                await _settle_rows(target, result, symbol, exchange)
        except Exception as exc:
            result.problem(f"verify {symbol}", exc)
            result.verified = False
    result.still_open = still_open
    result.troubles = exchange.troubles


def _rows_left_open(account_id: UUID, symbol: str) -> list[Order]:
    # Only orders the exchange acknowledged (a row it never saw has nothing to look up), and not the
    # kill's own flatten sale (the flatten step settles it).
    rows = Order.objects.filter(account_id=account_id, symbol=symbol, paper=False, status__in=Order.OPEN_STATUSES)
    rows = rows.exclude(exchange_order_id__isnull=True).exclude(exchange_order_id="")
    return list(rows.exclude(intent_tag__startswith=FLATTEN_TAG))


async def _settle_rows(target: AccountTarget, result: AccountResult, symbol: str, exchange: port.AsyncExchange) -> None:
    """Our rows still marked open where the exchange now lists none: written with their true status.

    An order that filled just before the kill (its worker stopped before syncing it) is not open on
    the exchange, so the kill did not cancel it; without this its row would read "open" until the
    bot runs again. Off the critical path: the exchange holds nothing open any more.
    """
    for row in await asyncio.to_thread(_rows_left_open, target.account.pk, symbol):
        try:
            remote = await exchange.order(symbol=symbol, client_order_id=row.client_order_id)
            await asyncio.to_thread(order_apply_exchange, row, remote)
            if result.count_settled and remote.status == "canceled":
                result.cancelled += 1
        except Exception as exc:  # the row stays as it was; a later sync settles it
            result.problem(f"settle {row.client_order_id}", exc)


async def _account_balances(result: AccountResult, exchange: port.AsyncExchange) -> None:
    try:
        balances = await exchange.balances()
        held = balances.held()
        result.balances = {asset: str(amount) for asset, amount in held.items()}
        result.free = {asset: str(balances.free.get(asset, 0)) for asset in held}
    except Exception as exc:
        result.problem("balances", exc)


def _verify_detail(results: list[AccountResult], gone: bool) -> str:
    still_open = sum(r.still_open for r in results)
    unverified = [r.label for r in results if not r.verified]
    if not gone:
        return (
            f"{still_open} open order(s) seen, but not every bot worker was confirmed stopped: "
            "orders could still be placed after this check, so the count is unknown"
        )
    if unverified:
        return f"{still_open} still open on the accounts that answered; unknown on {', '.join(unverified)}"
    return f"{still_open} still open (checked after every bot worker had stopped)"


async def exchanges_run(
    targets: list[AccountTarget],
    pv: vault.ProcessVault,
    steps: list[StepDone],
    workers_gone: Callable[[], bool],
    cancelled_now: Callable[[StepDone, int], None] | None = None,
) -> list[AccountResult]:
    """Cancel now; then, once `workers_gone` (blocking, run in a thread) has returned, verify and finish.

    Runs inside an event loop: its steps are collected in `steps` and stored once the loop is done,
    except the cancel step, handed at once to `cancelled_now` (blocking, run in a thread) with the
    count, so the report shows it while the final check still waits for the workers.
    """

    def add_step(name: str, ms: int, detail: str) -> None:
        steps.append((name, ms, detail, timezone.now()))

    t0 = time.monotonic()
    # Every account's key read at once (Vault calls run in threads: the default pool has only a few), and
    # no client-side rate limiter: the kill's calls are one cancel-all (and at most one listing) per symbol per
    # account.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(min(KILL_THREADS, max(8, 2 * len(targets))), thread_name_prefix="kill-io")
    )
    session = port.AsyncSession(rate_limit=False)
    try:
        outcomes = await asyncio.gather(*(_account_cancel(t, pv, session) for t in targets))
        results = [r for r, _, _ in outcomes]
        cancelled = sum(r.cancelled for r in results)
        add_step(
            "cancel",
            int((time.monotonic() - t0) * 1000),
            f"{cancelled} order(s) cancelled on {len(targets)} account(s){exchange_delay_note(results)}",
        )
        troubles_at_cancel = sum(r.troubles for r in results)
        if cancelled_now is not None:
            try:
                await asyncio.to_thread(cancelled_now, steps[-1], cancelled)
            except Exception:  # the report's live view only: the step is stored after the loop all the same
                logger.warning("kill: the cancel step was not shown early", exc_info=True)
        # Our rows written once every cancel of every account is answered: the database never delays a cancel.
        await asyncio.gather(
            *(
                _record(t, r, symbol, listed)
                for t, (r, _, done) in zip(targets, outcomes, strict=True)
                for symbol, listed in done
            )
        )
        # The final check must follow the last worker's exit: an order a worker sent after the cancel
        # above would otherwise be missed. Only this check waits; the cancel did not.
        gone = await asyncio.to_thread(workers_gone)
        t1 = time.monotonic()
        live = [(t, r, e) for t, (r, e, _) in zip(targets, outcomes, strict=True) if e is not None]
        await asyncio.gather(*(_account_verify(t, r, e) for t, r, e in live))
        verify_note = exchange_delay_note(results, troubles_before=troubles_at_cancel)
        add_step("verify", int((time.monotonic() - t1) * 1000), (_verify_detail(results, gone) + verify_note)[:300])
        if any(t.flatten for t in targets):
            t_flatten = time.monotonic()
            await asyncio.gather(*(account_flatten(t.flatten, e) for t, _, e in live))
            add_step("flatten", int((time.monotonic() - t_flatten) * 1000), "")  # detail written after the loop
        t2 = time.monotonic()
        await asyncio.gather(*(_account_balances(r, e) for _, r, e in live))
        add_step("balances", int((time.monotonic() - t2) * 1000), f"balances of {len(live)} account(s) read")
    finally:
        await session.close()  # after the report's figures: the clients, then the session they share
    return results
