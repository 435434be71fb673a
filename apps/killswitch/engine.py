"""Executing a kill run: revoke, stop, purge, cancel everywhere in parallel, verify, flatten (opt-in), report.

The halt is already committed when a run exists (see services.kill_request), so nothing here is
needed to stop new orders: this cleans up what is already out there and writes the report. Every
step is best effort and timed; a failing step adds a problem and the run ends "failed" instead of
"done", but the following steps still run. Redis may be down: only PostgreSQL, Vault and the
exchanges are required (bot token accessors are read from the database, not from Redis).

"revoke" comes first (a few Vault calls per bot, 8 bots at a time; run beside the exchange steps it
was measured to slow them, Vault and the exchange calls competing for the same CPUs). "stop" is the
fleet supervisor's work (the press set every affected bot to stopped): the engine waits, in a thread
beside the exchange steps so that cancelling is never delayed, until the fleet reports each bot's
worker stopped (which it does once the process has ended and its token is revoked), and reports how
many are left after STOP_WAIT_S. "cancel" cancels every open order at once, without waiting for the
workers. "verify" is the final check, and it waits for the stop step: it looks again at every
affected account only after the last worker has exited, cancels anything found, and only then is
"0 still open" a fact. If a worker is not confirmed gone, or an account does not answer, the count is
reported as unknown (KillRun.open_unknown) and the run fails. "flatten" appears only when an admin
flagged a live bot beforehand (Bot.flatten_on_kill): once everything is cancelled and checked, it
market-sells those bots' recorded positions (see flatten_plan). Each step in the report has its
duration ("ms") and when it ended, counted from the click ("at_ms").

Two runs may touch the same bot (a per-bot run, then an all-bots press while it runs): the Vault
steps treat what the other run already revoked or destroyed as done, not as a problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt
import certifi
import redis
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from apps.alerts.models import Alert
from apps.alerts.services import alert_raise
from apps.audit.services import record
from apps.bots.fleet import GRACE_S
from apps.bots.models import Bot
from apps.events.services import publish
from apps.exchanges import clients
from apps.exchanges.models import ExchangeAccount
from apps.killswitch.models import KillRun
from apps.trading.ids import client_order_id
from apps.trading.ledger import fill_record, ledger_for, split_symbol
from apps.trading.models import Order, Position
from apps.trading.sync import order_apply_exchange
from apps.vault import client as vault

logger = logging.getLogger(__name__)

ACTOR = "system:killswitch"
VERIFY_ATTEMPTS = 3
# The fleet polls about every second and gives a worker GRACE_S to finish its tick before SIGKILL.
STOP_WAIT_S = GRACE_S + 5.0
STOP_POLL_S = 0.1
REVOKE_THREADS = 8
SECRET_ID_ATTEMPTS = 4
REVOKE_ATTEMPTS = 4
STEP_ORDER = ("revoke", "stop", "purge", "cancel", "verify", "flatten", "balances")
FLATTEN_TAG = "kill-flatten"
_STOPPED = (Bot.Observed.STOPPED, Bot.Observed.HALTED)
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
class FlattenSale:
    """One market sell of a flagged bot's position; its Order row exists before it is sent."""

    order_id: int
    bot_id: int
    bot_name: str
    symbol: str
    amount: Decimal  # the bot's recorded position
    client_order_id: str
    sold: Decimal = Decimal(0)
    raw: dict[str, Any] | None = None
    trades: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


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
    balances: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    cancel_ms: int = 0
    verified: bool = False  # every symbol of the account answered the final check


@dataclass
class _RevokeOutcome:
    revocation: str = ""  # "revoked", "gone" (expired or revoked already), "refused" (not this bot's), "" (none)
    secret_ids: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class _Runner:
    run: KillRun
    bots: list[Bot]
    process_vault: vault.ProcessVault | None
    problems: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)  # accessors the revoke step dealt with
    workers_gone: bool = False  # set by the stop step once the fleet reported every worker stopped
    _beside: dict[str, threading.Thread] = field(default_factory=dict)
    _beside_done: dict[str, tuple[int, str, datetime]] = field(default_factory=dict)

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
        self.add_step(name, *self._timed(name, fn))

    def begin_beside(self, name: str, fn: Callable[[], str]) -> None:
        """Start a step in its own thread, beside the exchange steps (which it must not delay)."""

        def body() -> None:
            try:
                ms, detail = self._timed(name, fn)
                self._beside_done[name] = (ms, detail, timezone.now())
            finally:
                connection.close()  # this thread's own database connection

        thread = threading.Thread(target=body, name=f"kill-{self.run.pk}-{name}", daemon=True)
        self._beside[name] = thread
        thread.start()

    def join_beside(self, name: str, timeout: float) -> None:
        """Wait for a step started with begin_beside (without recording it: any thread may call this)."""
        self._beside[name].join(timeout)

    def end_beside(self, name: str, timeout: float) -> None:
        """Wait for a step started with begin_beside and record it."""
        self._beside[name].join(timeout)
        done = self._beside_done.get(name)
        if done is None:
            detail = f"failed: no answer within {timeout:.0f} s"
            self.problems.append(f"{name}: {detail}")
            done = (int(timeout * 1000), detail, timezone.now())
        self.add_step(name, done[0], done[1], done[2])

    def add_step(self, name: str, ms: int, detail: str, finished: datetime | None = None) -> None:
        # at_ms: when the step ended, counted from the click (the run's creation): the report's timeline.
        at_ms = int(((finished or timezone.now()) - self.run.created_at).total_seconds() * 1000)
        # Stored in the order of the procedure, whatever order the concurrent steps finish in.
        steps = [*self.run.steps, {"name": name, "ms": ms, "at_ms": at_ms, "detail": detail}]
        rank = {n: i for i, n in enumerate(STEP_ORDER)}
        self.run.steps = sorted(steps, key=lambda s: rank.get(s["name"], len(rank)))
        KillRun.objects.filter(pk=self.run.pk).update(steps=self.run.steps)
        _publish(self.run, "progress", step=name, ms=ms, detail=detail)

    def vault(self) -> vault.ProcessVault:
        if self.process_vault is None:
            self.process_vault = vault.from_settings()
        return self.process_vault

    # -- a. revoke ---------------------------------------------------------------------------

    def revoke(self) -> str:
        """Revoke each bot's token by the accessor its worker stored in the database; destroy its SecretIDs."""
        bots = [b for b in self.bots if b.mode == Bot.Mode.LIVE or b.vault_token_accessor]
        if not bots:
            return "no live bot"
        pv = self.vault()
        with ThreadPoolExecutor(min(REVOKE_THREADS, len(bots)), thread_name_prefix="kill-revoke") as pool:
            outcomes = list(pool.map(lambda bot: _revoke_bot(pv, bot), bots))
        for bot, outcome in zip(bots, outcomes, strict=True):
            self.revoked.add(bot.vault_token_accessor)
            self.problems.extend(outcome.problems)
        tokens = [o.revocation for o in outcomes]
        detail = f"{tokens.count('revoked')} bot token(s) revoked"
        if tokens.count("gone"):
            detail += f", {tokens.count('gone')} already revoked or expired"
        if tokens.count("refused"):
            detail += f", {tokens.count('refused')} accessor(s) refused (not the bot's token)"
        detail += f"; {sum(o.secret_ids for o in outcomes)} unused SecretID(s) destroyed"
        failed = sum(1 for o in outcomes if o.problems)
        return detail + (f"; {failed} bot(s) not fully revoked" if failed else "")

    # -- b. stop (the fleet's work; this waits for its word) --------------------------------

    def stop_wait(self) -> str:
        started = time.monotonic()
        ids = [b.pk for b in self.bots]
        had = [b.pk for b in self.bots if b.observed_state not in _STOPPED]
        if not had:
            self.workers_gone = True
            return f"no bot worker was running ({len(ids)} bot(s) already stopped)"
        deadline = started + STOP_WAIT_S
        while True:
            remaining = list(
                Bot.objects.filter(pk__in=ids).exclude(observed_state__in=_STOPPED).values_list("pk", "observed_state")
            )
            if not remaining or time.monotonic() >= deadline:
                break
            time.sleep(STOP_POLL_S)
        late = self._revoke_late(ids)
        waited = time.monotonic() - started
        if not remaining:
            self.workers_gone = True
            detail = (
                f"{len(had)} bot worker(s) were running; the fleet reported all stopped after {waited:.1f} s; "
                "0 worker processes remain"
            )
        else:
            states = ", ".join(f"bot #{pk} {state}" for pk, state in remaining)
            detail = (
                f"{len(had)} bot worker(s) were running; {len(remaining)} worker process(es) remain after "
                f"{waited:.0f} s ({states}): is the fleet supervisor running?"
            )
            self.problems.append(f"stop: {len(remaining)} bot worker(s) not reported stopped ({states})"[:300])
        return detail + (f"; {late} token(s) reported after the revoke step revoked" if late else "")

    def _revoke_late(self, ids: list[int]) -> int:
        """Revoke tokens of workers that logged in after the revoke step read the accessors."""
        late = [
            b
            for b in Bot.objects.filter(pk__in=ids).exclude(vault_token_accessor="")
            if b.vault_token_accessor not in self.revoked
        ]
        pv = self.vault()
        revoked = 0
        for bot in late:
            outcome = _revoke_bot(pv, bot, secret_ids=False)
            self.problems.extend(outcome.problems)
            revoked += outcome.revocation == "revoked"
        return revoked

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


def _revoke_bot(pv: vault.ProcessVault, bot: Bot, *, secret_ids: bool = True) -> _RevokeOutcome:
    outcome = _RevokeOutcome()
    accessor = bot.vault_token_accessor
    if accessor:
        outcome.revocation = _revoke_token(pv, bot, accessor, outcome.problems)
    if secret_ids and bot.mode == Bot.Mode.LIVE:
        error = _secret_ids_destroy(pv, bot, outcome)
        if error is not None:
            outcome.problems.append(f"revoke: SecretIDs of bot #{bot.pk} not destroyed: {error}"[:300])
    return outcome


def _secret_ids_destroy(pv: vault.ProcessVault, bot: Bot, outcome: _RevokeOutcome) -> vault.VaultError | None:
    """Destroy the bot's unused SecretIDs; None once none is left, else the last error.

    Another run (or the fleet) may destroy them at the same time, so an accessor listed a moment ago can be
    gone when destroyed: that is not a problem as long as none is left in the end, so list again and retry.
    """
    error: vault.VaultError | None = None
    for attempt in range(SECRET_ID_ATTEMPTS):
        try:
            outcome.secret_ids += pv.bot_secret_ids_destroy(bot.pk)
            return None
        except vault.VaultError as exc:
            error = exc
        try:
            if not pv.bot_secret_id_accessors(bot.pk):
                return None
        except vault.VaultError as exc:
            error = exc
        time.sleep(0.05 * (attempt + 1))
    return error


def _revoke_token(pv: vault.ProcessVault, bot: Bot, accessor: str, problems: list[str]) -> str:
    # The accessor is written by the bot's worker: make sure it names a token of this bot's role before
    # revoking, or a compromised worker could have the kill revoke another process's token.
    try:
        info = pv.token_lookup_accessor(accessor)
    except (vault.VaultForbidden, vault.VaultUnavailable) as exc:
        problems.append(f"revoke: token of bot #{bot.pk} not revoked: {exc}"[:300])
        return ""
    except vault.VaultError:
        return "gone"  # expired, or revoked by the fleet already
    if (info.get("meta") or {}).get("role_name") != bot.vault_role:
        logger.error("kill: bot %s's stored accessor is not a token of %s; not revoking it", bot.pk, bot.vault_role)
        problems.append(f"revoke: bot #{bot.pk}'s stored token accessor is not its own; refused")
        return "refused"
    error: vault.VaultError | None = None
    for attempt in range(REVOKE_ATTEMPTS):
        try:
            pv.token_revoke_accessor(accessor)
            return "revoked"
        except vault.VaultError as exc:
            error = exc
        # Another run (or the fleet) may be revoking the same token right now: Vault refuses the second
        # revocation, and the token disappears a moment later. That is not a problem once it is gone.
        if _token_gone(pv, accessor):
            return "gone"
        time.sleep(0.05 * (attempt + 1))
    problems.append(f"revoke: token of bot #{bot.pk} not revoked: {error}"[:300])
    return ""


def _token_gone(pv: vault.ProcessVault, accessor: str) -> bool:
    try:
        pv.token_lookup_accessor(accessor)
    except (vault.VaultForbidden, vault.VaultUnavailable):
        return False  # cannot tell: keep the problem
    except vault.VaultError:
        return True
    return False


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


# -- optional flatten: plan (database), sell (exchange, in the loop), record (database) ---------------


def flatten_plan(run: KillRun, bots: Iterable[Bot], targets: list[AccountTarget]) -> int:
    """Create the Order rows of the sells the kill will send; returns how many bots are flagged.

    Only live bots an admin flagged (flatten_on_kill) and only their own recorded long positions on
    their own symbols: other holdings of the account are never touched. These orders do not go
    through the order gate (it refuses everything while halted): they are the kill's own, decided
    beforehand by an admin, and recorded and audited like any order.
    """
    by_account = {str(t.account.pk): t for t in targets}
    flagged = [b for b in bots if b.mode == Bot.Mode.LIVE and b.flatten_on_kill]
    for bot in flagged:
        generation = ledger_for(bot).generation
        positions = Position.objects.filter(bot=bot, symbol__in=bot.symbols, base_quantity__gt=0).order_by("symbol")
        for position in positions:
            tag = f"{FLATTEN_TAG}-{run.pk}-{bot.symbols.index(position.symbol)}"
            order = Order.objects.create(
                bot=bot,
                account_id=bot.account_id,
                symbol=position.symbol,
                side=Order.Side.SELL,
                type=Order.Type.MARKET,
                amount=position.base_quantity,
                notional=position.base_quantity * (position.last_price or 0),
                client_order_id=client_order_id(bot.pk, tag, generation),
                intent_tag=tag,
                generation=generation,
            )
            by_account[str(bot.account_id)].flatten.append(
                FlattenSale(order.pk, bot.pk, bot.name, position.symbol, position.base_quantity, order.client_order_id)
            )
    return len(flagged)


async def _account_flatten(target: AccountTarget, client: Any) -> None:
    if not target.flatten:
        return
    try:
        free = (await client.fetch_balance()).get("free") or {}
    except Exception as exc:
        for sale in target.flatten:
            sale.error = f"balance not read: {_reason(exc)}"
        return
    for sale in target.flatten:
        try:
            base, _ = split_symbol(sale.symbol)
            # The recorded position, but never more than the account holds (fees, fills not yet seen).
            wanted = min(sale.amount, Decimal(str(free.get(base) or 0)))
            amount = Decimal(client.amount_to_precision(sale.symbol, float(wanted))) if wanted > 0 else Decimal(0)
            if amount <= 0:
                sale.error = f"nothing to sell ({base} free: {free.get(base) or 0})"
                continue
            since = client.milliseconds() - 5000
            sale.raw = await client.create_order(
                sale.symbol, "market", "sell", float(amount), None, {"newClientOrderId": sale.client_order_id}
            )
            sale.sold = amount
            order_id = str(sale.raw.get("id"))
            sale.trades = [
                t for t in await client.fetch_my_trades(sale.symbol, since) if str(t.get("order")) == order_id
            ]
        except Exception as exc:
            sale.error = _reason(exc)


def flatten_record(targets: list[AccountTarget]) -> tuple[str, list[str]]:
    """Store what the sells did (order state, fills and so positions), audit each; returns (detail, problems)."""
    sold: list[str] = []
    problems: list[str] = []
    for sale in (sale for target in targets for sale in target.flatten):
        order = Order.objects.select_related("bot").get(pk=sale.order_id)
        if sale.raw is not None:
            Order.objects.filter(pk=order.pk).update(amount=sale.sold)
            order.amount = sale.sold
            order_apply_exchange(order, sale.raw)
            for trade in sale.trades:
                fee = trade.get("fee") or {}
                fill_record(
                    order=order,
                    trade_id=str(trade["id"]),
                    price=Decimal(str(trade["price"])),
                    amount=Decimal(str(trade["amount"])),
                    fee=Decimal(str(fee.get("cost") or 0)),
                    fee_currency=str(fee.get("currency") or ""),
                    timestamp=datetime.fromtimestamp(int(trade["timestamp"]) / 1000, tz=UTC),
                )
            left = sale.amount - sale.sold
            sold.append(
                f"{sale.bot_name} sold {sale.sold.normalize():f} {sale.symbol} (average {order.average})"
                + (f", {left.normalize():f} left (below the lot size, or not in the account)" if left > 0 else "")
            )
        else:
            sale.error = sale.error or "not sent (no exchange client, or the exchange steps failed before)"
            Order.objects.filter(pk=order.pk).update(status=Order.Status.REJECTED, error=sale.error[:300])
            problems.append(f"flatten: {sale.bot_name} {sale.symbol}: {sale.error}"[:300])
        record(
            actor=ACTOR,
            action="killswitch.flatten_sold" if sale.raw is not None else "killswitch.flatten_failed",
            target=order,
            data={
                "bot": sale.bot_id,
                "symbol": sale.symbol,
                "position": sale.amount,
                "sold": sale.sold,
                "client_order_id": sale.client_order_id,
                "exchange_order_id": order.exchange_order_id,
                "average": order.average,
                "error": sale.error,
            },
        )
    return ("; ".join(sold) if sold else "no position sold"), problems


# -- d/e/f: the exchanges, in parallel ---------------------------------------------------------


async def _open_orders(client: Any, symbol: str) -> int:
    return len(await client.fetch_open_orders(symbol))


async def _cancel(client: Any, symbol: str) -> None:
    with contextlib.suppress(ccxt.OrderNotFound):  # nothing open (the sandbox says so with an error)
        await client.cancel_all_orders(symbol)


def _reason(exc: Exception) -> str:
    return clients.translate(exc).message if isinstance(exc, ccxt.BaseError) else f"{type(exc).__name__}: {exc}"


def _problem(result: AccountResult, what: str, exc: Exception) -> None:
    result.problems.append(f"{result.label}: {what}: {_reason(exc)}"[:300])


@dataclass
class _Shared:
    """What the accounts of one kill share, so that 20 accounts cost little more than one.

    One HTTP session (keep-alive connections, one TLS context; no cookie is kept, so none passes from
    one account to another) and, per exchange, the markets the first client loaded: each ccxt client
    would otherwise build its own TLS context and fetch and parse the exchange's markets itself.
    """

    session: aiohttp.ClientSession
    cafile: str
    markets: dict[str, asyncio.Future[Any]] = field(default_factory=dict)

    @classmethod
    def open(cls) -> _Shared:
        cafile = certifi.where()
        connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=cafile), enable_cleanup_closed=True)
        session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        return cls(session=session, cafile=cafile)

    def attach(self, client: Any) -> None:
        if client.verify is not True or client.cafile != self.cafile:
            return  # configured differently: it keeps a session of its own
        client.session, client.own_session = self.session, False
        client.timeout_on_exit = 0  # its close() then only forgets the shared session, closed once at the end

    async def load_markets(self, client: Any, exchange_id: str) -> None:
        loading = self.markets.get(exchange_id)
        if loading is None:  # the first client of this exchange loads them for all
            loading = self.markets[exchange_id] = asyncio.get_running_loop().create_future()
            try:
                await client.load_markets()
            finally:
                loading.set_result(client if client.markets else None)
            return
        source = await loading
        if source is None:
            await client.load_markets()
        else:
            client.set_markets_from_exchange(source)

    async def close(self) -> None:
        await self.session.close()  # waits until its connections are closed (aiohttp >= 3.12)


async def _account_cancel(target: AccountTarget, pv: vault.ProcessVault, shared: _Shared) -> tuple[AccountResult, Any]:
    result = AccountResult(label=target.account.label)
    started = time.monotonic()
    client = None
    try:
        secret = await asyncio.to_thread(pv.kv_read, target.account.vault_path)
        client = clients.build_client(
            exchange_id=target.account.exchange_id, credentials={k: str(v) for k, v in secret.items()}, flavor="async"
        )
        shared.attach(client)
        await shared.load_markets(client, target.account.exchange_id)
    except Exception as exc:
        _problem(result, "no client", exc)
        if client is not None:
            await _close(client)
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
    result.verified = True
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
            result.verified = False
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
    targets: list[AccountTarget],
    pv: vault.ProcessVault,
    steps: list[tuple[str, int, str, datetime]],
    workers_gone: Callable[[], bool],
) -> list[AccountResult]:
    """Cancel now; then, once `workers_gone` (blocking, run in a thread) has returned, verify and finish."""

    # Runs inside an event loop: steps are collected here and stored once the loop is done.
    def add_step(name: str, ms: int, detail: str) -> None:
        steps.append((name, ms, detail, timezone.now()))

    t0 = time.monotonic()
    shared = _Shared.open()
    pairs: list[tuple[AccountResult, Any]] = []
    try:
        pairs = await asyncio.gather(*(_account_cancel(t, pv, shared) for t in targets))
        results = [r for r, _ in pairs]
        add_step(
            "cancel",
            int((time.monotonic() - t0) * 1000),
            f"{sum(r.cancelled for r in results)} order(s) cancelled on {len(targets)} account(s)",
        )
        # The final check must follow the last worker's exit: an order a worker sent after the cancel
        # above would otherwise be missed. Only this check waits; the cancel did not.
        gone = await asyncio.to_thread(workers_gone)
        t1 = time.monotonic()
        live = [(t, r, c) for t, (r, c) in zip(targets, pairs, strict=True) if c is not None]
        await asyncio.gather(*(_account_verify(t, r, c) for t, r, c in live))
        still_open = sum(r.still_open for r in results)
        unverified = [r.label for r in results if not r.verified]
        if not gone:
            detail = (
                f"{still_open} open order(s) seen, but not every bot worker was confirmed stopped: "
                "orders could still be placed after this check, so the count is unknown"
            )
        elif unverified:
            detail = f"{still_open} still open on the accounts that answered; unknown on {', '.join(unverified)}"
        else:
            detail = f"{still_open} still open (checked after every bot worker had stopped)"
        add_step("verify", int((time.monotonic() - t1) * 1000), detail[:300])
        if any(t.flatten for t in targets):
            t_flatten = time.monotonic()
            await asyncio.gather(*(_account_flatten(t, c) for t, _, c in live))
            add_step("flatten", int((time.monotonic() - t_flatten) * 1000), "")  # detail written after the loop
        t2 = time.monotonic()
        await asyncio.gather(*(_account_balances(r, c) for _, r, c in live))
        add_step("balances", int((time.monotonic() - t2) * 1000), f"balances of {len(live)} account(s) read")
    finally:
        # Cleanup, after the report's figures: the clients, then the session they share.
        await asyncio.gather(*(_close(c) for _, c in pairs if c is not None))
        await shared.close()
    return results


# -- the entry points -----------------------------------------------------------------------------


def _claim(run_id: int) -> bool:
    return bool(
        KillRun.objects.filter(pk=run_id, status=KillRun.Status.PENDING).update(
            status=KillRun.Status.RUNNING,
            started_at=timezone.now(),
            problems=[],  # e.g. "not queued": moot now
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
    runner.begin_beside("stop", runner.stop_wait)  # the fleet is not needed to cancel
    runner.step("purge", runner.purge)

    targets = account_targets(bots)
    flagged = 0
    try:
        flagged = flatten_plan(run, bots, targets)
    except Exception as exc:
        logger.exception("kill run %s: flatten not planned", run.pk)
        runner.problems.append(f"flatten: not planned: {type(exc).__name__}: {exc}"[:300])
    results: list[AccountResult] = []
    steps_done: list[tuple[str, int, str, datetime]] = []
    started = time.monotonic()

    def workers_gone() -> bool:
        runner.join_beside("stop", STOP_WAIT_S + 10)
        return runner.workers_gone

    try:
        if targets:
            results = asyncio.run(_exchanges(targets, runner.vault(), steps_done, workers_gone))
    except Exception as exc:
        logger.exception("kill run %s: exchange steps failed", run.pk)
        runner.problems.append(f"exchanges: {type(exc).__name__}: {exc}"[:300])
    for name, ms, detail, finished in steps_done:
        if name != "flatten":
            runner.add_step(name, ms, detail, finished)
    if flagged:
        done = next(((ms, at) for n, ms, _, at in steps_done if n == "flatten"), None)
        detail, problems = _flatten_outcome(targets) if any(t.flatten for t in targets) else ("", [])
        runner.problems.extend(problems)
        runner.add_step(
            "flatten",
            done[0] if done else 0,
            detail or f"{flagged} bot(s) flagged; no position to sell",
            done[1] if done else None,
        )
    done_names = {name for name, *_ in steps_done}
    for name in ("cancel", "verify", "balances"):
        if name not in done_names:
            detail = "no live accounts" if not targets else "not reached"
            runner.add_step(name, 0 if not targets else int((time.monotonic() - started) * 1000), detail)
    runner.end_beside("stop", STOP_WAIT_S + 10)

    for result in results:
        runner.problems.extend(result.problems)
    run.orders_cancelled = sum(r.cancelled for r in results)
    run.orders_still_open = sum(r.still_open for r in results)
    # "0 still open" only when every account answered a check made after every worker had exited.
    run.open_unknown = bool(targets) and (
        not runner.workers_gone or len(results) != len(targets) or not all(r.verified for r in results)
    )
    run.balances_after = {
        str(t.account.pk): {"label": r.label, "total": r.balances} for t, r in zip(targets, results, strict=False)
    }
    run.problems = runner.problems
    if run.orders_still_open and not any("still open" in p for p in run.problems):
        run.problems.append(f"{run.orders_still_open} order(s) still open after {VERIFY_ATTEMPTS} retries")
    if run.open_unknown:
        run.problems.append("verify: open orders unknown (see the verify step); check the exchanges by hand")
    run.status = KillRun.Status.FAILED if run.problems else KillRun.Status.DONE
    run.finished_at = timezone.now()
    run.save(
        update_fields=[
            "status",
            "finished_at",
            "orders_cancelled",
            "orders_still_open",
            "open_unknown",
            "balances_after",
            "problems",
            "steps",
        ]
    )
    _finish(run, len(bots), len(targets))
    return run


def _flatten_outcome(targets: list[AccountTarget]) -> tuple[str, list[str]]:
    try:
        return flatten_record(targets)
    except Exception as exc:
        logger.exception("flatten results not recorded")
        detail = f"failed to record: {type(exc).__name__}: {exc}"[:300]
        return detail, [f"flatten: {detail}"]


def report_summary(run: KillRun) -> dict[str, Any]:
    return {
        "run": run.pk,
        "scope": run.scope,
        "bot": run.bot_id,
        "status": run.status,
        "reason": run.reason,
        "duration_ms": run.duration_ms,
        "orders_cancelled": run.orders_cancelled,
        "orders_still_open": run.orders_still_open,
        "open_unknown": run.open_unknown,
        "problems": run.problems,
        "steps": [{"name": s["name"], "ms": s["ms"], "at_ms": s.get("at_ms")} for s in run.steps],
    }


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
        f"in {run.duration_ms} ms: {run.orders_cancelled} order(s) cancelled, {run.still_open_text} still open, "
        f"{n_bots} bot(s) stopped, {n_accounts} account(s). Reason: {run.reason}"
    )
    if run.problems:
        message += "\nProblems:\n" + "\n".join(f"- {p}" for p in run.problems)
    try:
        alert_raise(
            kind="kill_switch",
            severity=Alert.Severity.CRITICAL,
            message=message,
            target=run,
            data=summary,
            source=ACTOR,
        )
    except Exception:
        logger.exception("kill run %s: alert not raised", run.pk)


def kill_runs_abandon(*, now: datetime | None = None) -> int:
    """Mark failed the runs still "running" long after they were claimed (their executor died mid-run).

    Their report is incomplete and nothing is verified: presses no longer join them, a resume no
    longer waits for them (services.active_runs), and the page says what happened.
    """
    from apps.killswitch.services import RUN_ABANDONED_AFTER

    now = now or timezone.now()
    abandoned = 0
    for run in KillRun.objects.filter(status=KillRun.Status.RUNNING, started_at__lt=now - RUN_ABANDONED_AFTER):
        problem = "the process executing this run stopped before it finished: nothing after its last step is verified"
        changed = KillRun.objects.filter(pk=run.pk, status=KillRun.Status.RUNNING).update(
            status=KillRun.Status.FAILED, finished_at=now, open_unknown=True, problems=[*run.problems, problem]
        )
        if changed:
            abandoned += 1
            record(actor=ACTOR, action="killswitch.abandoned", target=run, data={"started_at": run.started_at})
    return abandoned


def kill_pending() -> int:
    """Execute every pending run, oldest first; returns how many this call executed."""
    kill_runs_abandon()
    executed = 0
    for run_id in (
        KillRun.objects.filter(status=KillRun.Status.PENDING).order_by("created_at", "pk").values_list("pk", flat=True)
    ):
        close_old_connections()
        if _claim(run_id):
            _execute_claimed(KillRun.objects.get(pk=run_id), None)
            executed += 1
    return executed
