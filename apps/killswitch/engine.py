"""Executing a kill run: revoke, stop, purge, cancel everywhere in parallel, verify, report.

The halt is already committed when a run exists (see services.kill_request), so nothing here is
needed to stop new orders: this cleans up what is already out there and writes the report. Every
step is best effort and timed; a failing step adds a problem and the run ends "failed" instead of
"done", but the following steps still run. Redis may be down: only PostgreSQL, Vault and the
exchanges are required.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import ccxt
import redis
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from apps.audit.services import record
from apps.bots.fleet import token_accessor_key
from apps.bots.models import Bot
from apps.exchanges import clients
from apps.exchanges.models import ExchangeAccount
from apps.killswitch.alerts import alert_raise
from apps.killswitch.models import Alert, KillRun
from apps.live.services import publish
from apps.vault import client as vault

logger = logging.getLogger(__name__)

ACTOR = "system:killswitch"
VERIFY_ATTEMPTS = 3
# kombu's Redis transport keeps a queue as a list named after it, plus one list per priority step.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1.0, socket_timeout=2.0)


def _publish(run: KillRun, stage: str, **data: Any) -> None:
    try:
        publish(kind="kill_switch", data={"run": run.pk, "stage": stage, **data})
    except Exception:  # the live feed is a courtesy; never let it fail a kill
        logger.warning("kill run %s: live event %s not stored", run.pk, stage, exc_info=True)


@dataclass
class AccountTarget:
    account: ExchangeAccount
    symbols: list[str]


@dataclass
class AccountResult:
    label: str
    cancelled: int = 0
    still_open: int = 0
    balances: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    cancel_ms: int = 0


@dataclass
class _Runner:
    run: KillRun
    bots: list[Bot]
    process_vault: vault.ProcessVault | None
    problems: list[str] = field(default_factory=list)

    def step(self, name: str, fn: Callable[[], str]) -> None:
        started = time.monotonic()
        try:
            detail = fn()
        except Exception as exc:  # a step never aborts the run
            logger.exception("kill run %s: step %s failed", self.run.pk, name)
            detail = f"failed: {type(exc).__name__}: {exc}"[:300]
            self.problems.append(f"{name}: {detail}")
        self.add_step(name, int((time.monotonic() - started) * 1000), detail)

    def add_step(self, name: str, ms: int, detail: str) -> None:
        self.run.steps = [*self.run.steps, {"name": name, "ms": ms, "detail": detail}]
        KillRun.objects.filter(pk=self.run.pk).update(steps=self.run.steps)
        _publish(self.run, "progress", step=name, ms=ms, detail=detail)

    def vault(self) -> vault.ProcessVault:
        if self.process_vault is None:
            self.process_vault = vault.from_settings()
        return self.process_vault

    # -- a. revoke ---------------------------------------------------------------------------

    def revoke(self) -> str:
        try:
            r = _redis()
            accessors = {bot.pk: r.get(token_accessor_key(bot.pk)) for bot in self.bots}
        except redis.RedisError:
            return "skipped: Redis unavailable (the fleet revokes when it stops each worker)"
        revoked = 0
        for bot_id, raw in accessors.items():
            if not raw:
                continue
            accessor = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                self.vault().token_revoke_accessor(accessor)
                revoked += 1
            except vault.VaultError as exc:  # already expired or revoked by the fleet
                logger.info("kill run %s: token of bot %s not revoked (%s)", self.run.pk, bot_id, type(exc).__name__)
        return f"{revoked} bot token(s) revoked"

    # -- b. stop -----------------------------------------------------------------------------

    def stop(self) -> str:
        running = [b for b in self.bots if b.observed_state in (Bot.Observed.RUNNING, Bot.Observed.STARTING)]
        return f"{len(running)} of {len(self.bots)} bot(s) were running; the fleet stops their workers"

    # -- c. purge ----------------------------------------------------------------------------

    def purge(self) -> str:
        names = [
            name
            for bot in self.bots
            for name in (bot.queue, *(f"{bot.queue}{_PRIORITY_SEP}{p}" for p in _PRIORITY_STEPS))
        ]
        if not names:
            return "no queues"
        try:
            r = _redis()
            pipe = r.pipeline()
            for name in names:
                pipe.llen(name)
            lengths = pipe.execute()
            r.delete(*names)
        except redis.RedisError:
            return "skipped: Redis unavailable"
        return f"{sum(int(n) for n in lengths)} queued message(s) purged from {len(self.bots)} queue(s)"


def affected_bots(run: KillRun) -> list[Bot]:
    qs = Bot.objects.select_related("account")
    if run.scope == KillRun.Scope.BOT:
        return list(qs.filter(pk=run.bot_id)) if run.bot_id is not None else []
    return list(qs.all())


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


# -- d/e/f: the exchanges, in parallel ---------------------------------------------------------


async def _open_orders(client: Any, symbol: str) -> int:
    return len(await client.fetch_open_orders(symbol))


async def _cancel(client: Any, symbol: str) -> None:
    with contextlib.suppress(ccxt.OrderNotFound):  # nothing open (the sandbox says so with an error)
        await client.cancel_all_orders(symbol)


def _problem(result: AccountResult, what: str, exc: Exception) -> None:
    reason = clients.translate(exc).message if isinstance(exc, ccxt.BaseError) else f"{type(exc).__name__}: {exc}"
    result.problems.append(f"{result.label}: {what}: {reason}"[:300])


async def _account_cancel(target: AccountTarget, pv: vault.ProcessVault) -> tuple[AccountResult, Any]:
    result = AccountResult(label=target.account.label)
    started = time.monotonic()
    try:
        secret = await asyncio.to_thread(pv.kv_read, target.account.vault_path)
        client = clients.build_client(
            exchange_id=target.account.exchange_id, credentials={k: str(v) for k, v in secret.items()}, flavor="async"
        )
    except Exception as exc:
        _problem(result, "no client", exc)
        return result, None
    for symbol in target.symbols:
        try:
            open_now = await _open_orders(client, symbol)
            if open_now:
                await _cancel(client, symbol)
                result.cancelled += open_now
        except Exception as exc:
            _problem(result, f"cancel {symbol}", exc)
    result.cancel_ms = int((time.monotonic() - started) * 1000)
    return result, client


async def _account_verify(target: AccountTarget, result: AccountResult, client: Any) -> None:
    still_open = 0
    for symbol in target.symbols:
        try:
            remaining = await _open_orders(client, symbol)
            for _ in range(VERIFY_ATTEMPTS):
                if not remaining:
                    break
                await _cancel(client, symbol)
                result.cancelled += remaining
                remaining = await _open_orders(client, symbol)
                result.cancelled -= remaining
            still_open += remaining
        except Exception as exc:
            _problem(result, f"verify {symbol}", exc)
            still_open += 1  # unknown: count it as not verified
    result.still_open = still_open


async def _account_balances(result: AccountResult, client: Any) -> None:
    try:
        balance = await client.fetch_balance()
        totals = balance.get("total") or {}
        result.balances = {
            asset: str(Decimal(str(amount))) for asset, amount in sorted(totals.items()) if amount not in (None, 0)
        }
    except Exception as exc:
        _problem(result, "balances", exc)


async def _close(client: Any) -> None:
    try:
        await client.close()
    except Exception:
        logger.debug("closing an exchange client failed", exc_info=True)


async def _exchanges(
    targets: list[AccountTarget], pv: vault.ProcessVault, steps: list[tuple[str, int, str]]
) -> list[AccountResult]:
    # Runs inside an event loop: steps are collected here and stored once the loop is done.
    def add_step(name: str, ms: int, detail: str) -> None:
        steps.append((name, ms, detail))

    t0 = time.monotonic()
    pairs = await asyncio.gather(*(_account_cancel(t, pv) for t in targets))
    results = [r for r, _ in pairs]
    add_step(
        "cancel", int((time.monotonic() - t0) * 1000),
        f"{sum(r.cancelled for r in results)} order(s) cancelled on {len(targets)} account(s)",
    )  # fmt: skip
    try:
        t1 = time.monotonic()
        live = [(t, r, c) for t, (r, c) in zip(targets, pairs, strict=True) if c is not None]
        await asyncio.gather(*(_account_verify(t, r, c) for t, r, c in live))
        add_step("verify", int((time.monotonic() - t1) * 1000), f"{sum(r.still_open for r in results)} still open")
        t2 = time.monotonic()
        await asyncio.gather(*(_account_balances(r, c) for _, r, c in live))
        add_step("balances", int((time.monotonic() - t2) * 1000), f"balances of {len(live)} account(s) read")
    finally:
        # Closing is cleanup (ccxt lingers about 250 ms per client): close them all at once.
        await asyncio.gather(*(_close(c) for _, c in pairs if c is not None))
    return results


# -- the entry points -----------------------------------------------------------------------------


def _claim(run_id: int) -> bool:
    return bool(
        KillRun.objects.filter(pk=run_id, status=KillRun.Status.PENDING).update(
            status=KillRun.Status.RUNNING, started_at=timezone.now()
        )
    )


def kill_execute(*, run_id: int, process_vault: vault.ProcessVault | None = None) -> KillRun:
    """Execute a pending kill run and return it with its report. A run already claimed is returned as is."""
    if not _claim(run_id):
        return KillRun.objects.get(pk=run_id)
    return _execute_claimed(KillRun.objects.get(pk=run_id), process_vault)


def _execute_claimed(run: KillRun, process_vault: vault.ProcessVault | None) -> KillRun:
    bots = affected_bots(run)
    runner = _Runner(run=run, bots=bots, process_vault=process_vault)
    _publish(run, "started", scope=run.scope, bot=run.bot_id, reason=run.reason)

    runner.step("revoke", runner.revoke)
    runner.step("stop", runner.stop)
    runner.step("purge", runner.purge)

    targets = account_targets(bots)
    results: list[AccountResult] = []
    steps_done: list[tuple[str, int, str]] = []
    started = time.monotonic()
    try:
        if targets:
            results = asyncio.run(_exchanges(targets, runner.vault(), steps_done))
    except Exception as exc:
        logger.exception("kill run %s: exchange steps failed", run.pk)
        runner.problems.append(f"exchanges: {type(exc).__name__}: {exc}"[:300])
    for name, ms, detail in steps_done:
        runner.add_step(name, ms, detail)
    done_names = {name for name, _, _ in steps_done}
    for name in ("cancel", "verify", "balances"):
        if name not in done_names:
            detail = "no live accounts" if not targets else "not reached"
            runner.add_step(name, 0 if not targets else int((time.monotonic() - started) * 1000), detail)

    for result in results:
        runner.problems.extend(result.problems)
    run.orders_cancelled = sum(r.cancelled for r in results)
    run.orders_still_open = sum(r.still_open for r in results)
    run.balances_after = {str(t.account.pk): {"label": r.label, "total": r.balances}
                          for t, r in zip(targets, results, strict=False)}  # fmt: skip
    run.problems = runner.problems
    if run.orders_still_open and not any("still open" in p for p in run.problems):
        run.problems.append(f"{run.orders_still_open} order(s) still open after {VERIFY_ATTEMPTS} retries")
    run.status = KillRun.Status.FAILED if run.problems else KillRun.Status.DONE
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "finished_at", "orders_cancelled", "orders_still_open", "balances_after",
                            "problems", "steps"])  # fmt: skip
    _finish(run, len(bots), len(targets))
    return run


def report_summary(run: KillRun) -> dict[str, Any]:
    return {
        "run": run.pk, "scope": run.scope, "bot": run.bot_id, "status": run.status, "reason": run.reason,
        "duration_ms": run.duration_ms, "orders_cancelled": run.orders_cancelled,
        "orders_still_open": run.orders_still_open, "problems": run.problems,
        "steps": [{"name": s["name"], "ms": s["ms"]} for s in run.steps],
    }  # fmt: skip


def _finish(run: KillRun, n_bots: int, n_accounts: int) -> None:
    summary = report_summary(run)
    try:
        record(actor=ACTOR, action="killswitch.finished", target=run, data=summary)
    except Exception:
        logger.exception("kill run %s: audit entry not written", run.pk)
    _publish(run, "finished", report=summary)
    scope = f"bot #{run.bot_id}" if run.scope == KillRun.Scope.BOT else "all bots"
    message = (
        f"Kill switch ({scope}) {'finished' if run.status == KillRun.Status.DONE else 'finished WITH PROBLEMS'} "
        f"in {run.duration_ms} ms: {run.orders_cancelled} order(s) cancelled, {run.orders_still_open} still open, "
        f"{n_bots} bot(s) stopped, {n_accounts} account(s). Reason: {run.reason}"
    )
    if run.problems:
        message += "\nProblems:\n" + "\n".join(f"- {p}" for p in run.problems)
    try:
        alert_raise(kind="kill_switch", severity=Alert.Severity.CRITICAL, message=message, target=run, data=summary,
                    source=ACTOR)  # fmt: skip
    except Exception:
        logger.exception("kill run %s: alert not raised", run.pk)


def kill_pending() -> int:
    """Execute every pending run, oldest first; returns how many this call executed."""
    executed = 0
    for run_id in (
        KillRun.objects.filter(status=KillRun.Status.PENDING).order_by("created_at", "pk").values_list("pk", flat=True)
    ):
        close_old_connections()
        if _claim(run_id):
            _execute_claimed(KillRun.objects.get(pk=run_id), None)
            executed += 1
    return executed
