"""Bot worker bootstrap: turn the wrapped SecretID the fleet handed us into an exchange client.

Active only in a worker started by the fleet supervisor (BOT_ID set). When the worker is ready:
look up the wrapping token and insist it was created at `auth/approle/role/bot-<BOT_ID>/secret-id`
(a token wrapping anything else, e.g. another bot's SecretID, is refused and the worker exits),
unwrap it, log in with AppRole, read this bot's account secret, build its exchange client and keep it
in this process's memory only. A background thread renews the token before it expires, and
another keeps the exchange's dead-man's switch armed (apps.trading.deadman) where the exchange has one.

The secret, the SecretID and the token are never logged, never put in a task, never written
to the database or Redis; only the token's accessor is reported (so the fleet can revoke it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from apps.bots import events as bot_events
from apps.bots.identities import token_accessor_report
from apps.bots.models import Bot
from apps.exchanges import port
from apps.trading.deadman import DeadmanSwitch, State, report_state
from apps.vault import client as vault

logger = logging.getLogger(__name__)

EXIT_REFUSED = 78  # EX_CONFIG: the fleet sees a crash and restarts us with a fresh SecretID
EXIT_ORPHANED = 1
ORPHAN_CHECK_S = 1.0  # how often a worker looks whether its supervisor is still its parent
ORPHAN_GRACE_S = 10.0  # how long the warm shutdown may take once the supervisor is gone
ACCESSOR_TTL_S = 24 * 3600  # the bot token's max TTL


class BootstrapRefused(Exception):
    """The worker's credentials are not what they must be; it refuses to run."""


@dataclass
class Runtime:
    bot_id: int
    exchange: port.Exchange | None = None
    token_accessor: str = ""
    chain: str = field(default_factory=lambda: uuid.uuid4().hex)
    process_vault: vault.ProcessVault | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    # The dead-man's switch thread's own exchange client (same key): never shared with the tick path.
    deadman_exchange: port.Exchange | None = None
    deadman: DeadmanSwitch | None = None
    # The tick chain's pulse (apps.trading.tasks): when the last tick began or ended (time.monotonic()),
    # whether one is running, the bot's tick interval as last read, and whether ticks stopped on purpose.
    last_tick: float = field(default_factory=time.monotonic)
    ticking: bool = False
    tick_interval_s: float = 1.0
    ticks_ended: bool = False
    tick_lock: threading.Lock = field(default_factory=threading.Lock)

    def __repr__(self) -> str:  # never show the exchange client (it holds the key) or the token
        return f"Runtime(bot_id={self.bot_id}, token_accessor={self.token_accessor!r})"


_runtime: Runtime | None = None


def current() -> Runtime | None:
    return _runtime


def get_exchange() -> port.Exchange:
    """This bot's exchange client (live: with its key; paper: market data only, without credentials)."""
    if _runtime is None or _runtime.exchange is None:
        raise RuntimeError("this process is not a bootstrapped bot worker")
    return _runtime.exchange


def check_wrapping(info: dict[str, Any], bot_id: int) -> None:
    """Refuse a wrapping token that was not created by issuing a SecretID for our own role."""
    expected = vault.bot_secret_id_path(bot_id)
    if info.get("creation_path") != expected:
        raise BootstrapRefused(
            f"the wrapping token was created at {info.get('creation_path')!r}, not {expected!r}; refusing it"
        )


def bootstrap(*, bot_id: int, addr: str, role_id: str, wrapping_token: str) -> Runtime:
    """Build this bot's runtime from its role id and wrapped SecretID (live bots)."""
    bot = Bot.objects.select_related("account").get(pk=bot_id)
    runtime = Runtime(bot_id=bot_id)
    if bot.mode != Bot.Mode.LIVE:
        # Paper bots simulate fills; they need market data only, never a key.
        runtime.exchange = port.Exchange(exchange_id=bot.account.exchange_id)
        return runtime
    if not (role_id and wrapping_token):
        raise BootstrapRefused("a live bot worker needs VAULT_ROLE_ID and VAULT_WRAPPED_SECRET_ID")
    # Look before unwrapping: unwrapping a token meant for another path would consume it.
    check_wrapping(vault.wrapping_lookup(addr, wrapping_token), bot_id)
    secret_id = str(vault.unwrap(addr, wrapping_token)["secret_id"])
    login = vault.approle_login(addr, role_id, secret_id)
    del secret_id
    if vault.bot_role(bot_id) not in login.policies:
        raise BootstrapRefused(f"the AppRole login did not yield the policy {vault.bot_role(bot_id)}")
    pv = vault.ProcessVault(addr, login.token)
    credentials = pv.kv_read(bot.account.vault_path)
    runtime.exchange = port.Exchange(exchange_id=bot.account.exchange_id, credentials=credentials)
    if runtime.exchange.deadman_available:
        runtime.deadman_exchange = port.Exchange(exchange_id=bot.account.exchange_id, credentials=credentials)
    del credentials
    runtime.token_accessor = login.accessor
    runtime.process_vault = pv
    _report_accessor(bot_id, login.accessor)
    _start_renewal(runtime, login.ttl_s)
    return runtime


def _report_accessor(bot_id: int, accessor: str) -> None:
    token_accessor_report(bot_id, accessor, ttl_s=ACCESSOR_TTL_S)  # the database first: kills need no Redis


def _start_renewal(runtime: Runtime, ttl_s: int) -> None:
    def renew() -> None:
        ttl = ttl_s
        while not runtime.stop.wait(max(5.0, ttl / 2)):
            pv = runtime.process_vault
            if pv is None:
                return
            try:
                ttl = pv.token_renew_self()
            except vault.VaultForbidden:
                # Revoked (kill switch or stop): nothing more to renew; ticks will fail to trade.
                logger.warning("bot %s: its Vault token was revoked", runtime.bot_id)
                return
            except vault.VaultError as exc:
                logger.warning("bot %s: token renewal failed (%s); retrying", runtime.bot_id, type(exc).__name__)
                ttl = 20

    threading.Thread(target=renew, name=f"bot-{runtime.bot_id}-renew", daemon=True).start()


def _start_deadman(runtime: Runtime) -> DeadmanSwitch | None:
    """Arm the exchange's dead-man's switch for a live bot and keep it armed (paper bots: nothing)."""
    bot = Bot.objects.select_related("account").get(pk=runtime.bot_id)
    if bot.mode != Bot.Mode.LIVE:
        return None
    exchange_id = bot.account.exchange_id
    if runtime.deadman_exchange is None:
        logger.warning(
            "bot %s: %s offers no dead-man's switch (cancelAllOrdersAfter): if the console dies, "
            "its open orders stay on the exchange",
            bot.pk,
            exchange_id,
        )
        report_state(bot.pk, state=State.UNAVAILABLE, exchange=exchange_id)
        return None

    def symbols() -> list[str]:
        return list(Bot.objects.values_list("symbols", flat=True).get(pk=bot.pk) or [])

    switch = DeadmanSwitch(
        bot_id=bot.pk,
        bot_name=bot.name,
        exchange_id=exchange_id,
        exchange=runtime.deadman_exchange,
        symbols=symbols,
        refresh_s=settings.DEADMAN_REFRESH_S,
        timeout_s=settings.DEADMAN_TIMEOUT_S,
    )
    switch.start()
    return switch


def _stopped_deliberately(bot_id: int) -> bool:
    """True when someone stopped (or deleted) the bot; False while it is wanted running or halted.

    A halted bot's orders are the kill switch's to cancel; leaving its countdown armed only adds a
    second line of defence. When the database cannot tell, the countdown stays armed too.
    """

    try:
        close_old_connections()
        row = Bot.objects.filter(pk=bot_id).values("desired_state", "halted").first()
    except Exception as exc:
        logger.warning("bot %s: cannot read its desired state at shutdown (%s)", bot_id, type(exc).__name__)
        return False
    return row is None or (row["desired_state"] != Bot.Desired.RUNNING and not row["halted"])


def _exit_when_orphaned(bot_id: int, supervisor: int, grace_s: float) -> None:
    """Once the supervisor is gone, give the warm shutdown its SIGTERM started (PR_SET_PDEATHSIG) `grace_s`, then
    exit: a shutdown can hang (celery retries an unreachable broker for ever), and a worker must not outlive its
    supervisor, whose successor would start another for the same bot."""
    while os.getppid() == supervisor:
        time.sleep(ORPHAN_CHECK_S)
    logger.warning("bot %s: its fleet supervisor is gone; exiting within %.0f s", bot_id, grace_s)
    time.sleep(grace_s)
    logger.error("bot %s: still running %.0f s after its supervisor died; exiting now", bot_id, grace_s)
    logging.shutdown()
    os._exit(EXIT_ORPHANED)


def _start_orphan_watch(bot_id: int) -> None:
    args = (bot_id, os.getppid(), ORPHAN_GRACE_S)
    threading.Thread(target=_exit_when_orphaned, args=args, name=f"bot-{bot_id}-orphan", daemon=True).start()


def _mark_running(bot_id: int) -> None:
    Bot.objects.filter(pk=bot_id).update(observed_state=Bot.Observed.RUNNING, last_heartbeat=timezone.now())
    bot_events.bot_state(bot_id)


def worker_start(bot_id: int) -> Runtime:
    """Bootstrap this process as bot `bot_id`'s worker (or exit with EXIT_REFUSED) and arm its dead-man's switch."""
    global _runtime
    try:
        _runtime = bootstrap(
            bot_id=bot_id,
            addr=settings.VAULT_ADDR,
            role_id=os.environ.get("VAULT_ROLE_ID", ""),
            wrapping_token=os.environ.get("VAULT_WRAPPED_SECRET_ID", ""),
        )
    except (BootstrapRefused, vault.VaultError) as exc:
        # The messages of both carry no secret (paths, policy names, error kinds only).
        logger.error("bot %s: refusing to start: %s", bot_id, exc)
        logging.shutdown()
        os._exit(EXIT_REFUSED)
    except Exception as exc:
        logger.error("bot %s: bootstrap failed (%s)", bot_id, type(exc).__name__)
        logging.shutdown()
        os._exit(EXIT_REFUSED)
    finally:
        # Single-use and consumed now; keep it out of anything that copies os.environ later.
        os.environ.pop("VAULT_WRAPPED_SECRET_ID", None)
    try:
        # Before the first tick: no order of this worker ever rests without the countdown.
        _runtime.deadman = _start_deadman(_runtime)
    except Exception as exc:  # the bot still runs; the page shows no armed switch
        logger.error("bot %s: could not start the dead-man's switch (%s)", bot_id, type(exc).__name__)
    _start_orphan_watch(bot_id)
    _mark_running(bot_id)
    logger.info("bot %s: worker ready (%s)", bot_id, "vault identity" if _runtime.token_accessor else "paper")
    return _runtime


def worker_stop() -> None:
    """The worker is shutting down: stop the renewal and disarm the dead-man's switch after a deliberate stop."""
    if _runtime is not None:
        _runtime.stop.set()
        if _runtime.deadman is not None:
            _runtime.deadman.shutdown(disarm=_stopped_deliberately(_runtime.bot_id))
