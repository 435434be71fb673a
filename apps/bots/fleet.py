"""The fleet supervisor: one Celery worker process per running bot, each with its own Vault identity.

`manage.py runfleet` calls `Fleet.run()`, which calls `sync_once()` about every second: it
compares each bot's desired state with the processes it has started and starts, stops or
restarts workers to match. For a live bot it first writes the policy and AppRole `bot-<id>`
(read that one account's secret), then hands the new worker only the role id and a
response-wrapped SecretID through its environment: the supervisor never sees a SecretID, never
a bot token, and holds no exchange secret. Paper bots get a worker without any Vault identity.

Each supervisor runs the bots whose `host` equals its host label (FLEET_HOST_LABEL, or
`runfleet --host-label`): bot workers can be spread over several machines, each with its own
supervisor, sharing the database, the broker and Vault. A supervisor reports its label in
FleetHost every few seconds; the bot form offers the labels seen.

Every process it starts dies with it (PR_SET_PDEATHSIG: SIGTERM, a warm shutdown that finishes the current tick).
A supervisor that was killed outright revoked nothing, and one of its workers may still be finishing a tick stuck on
a slow exchange: before starting anything, a new supervisor stops what its dead predecessor left running (SIGTERM,
SIGKILL after the grace period) and revokes the tokens those workers held (apps/bots/orphans.py), so that no bot
ever runs in two workers at once.

A worker that dies is restarted with exponential backoff (1, 2, 4 ... 60 s). A stopped bot's
worker gets SIGTERM, then SIGKILL after a grace period; then its token is revoked (by the
accessor the worker reported, kept in the database) and its SecretIDs, role and policy are
destroyed. Only then is the bot shown as stopped, which the kill switch waits for.

FLEET_WORKER_MODE selects how a worker is started: "fork" (default) forks it from a preloaded template process
(apps/bots/zygote.py) that holds no token, secret or database connection: the worker receives its identity
through a pipe only it reads, is reparented to this supervisor (which waits on it, stops and reaps it exactly
as a spawned one) and dies with it. A template that dies is started again; bots wait for it (without an
identity issued) while it preloads. "spawn" runs a fresh `celery worker` process per bot instead (about
145 MB and a second more per worker).

With `market_data` on (as `manage.py runfleet` runs it), the supervisor also keeps one market-data feed
process for its host (`manage.py runmarketdata`, apps/trading/marketdata.py): it streams the prices and
candles of the symbols its bots trade into Valkey, where their ticks read them instead of polling the
exchange each. It holds no secret; it is restarted with backoff when it dies, and stopped with the workers.
Bots do not depend on it: without it they read the exchange by REST, as before.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from apps.audit.services import record
from apps.bots import events as bot_events
from apps.bots.halts import global_halt_active, global_halt_state
from apps.bots.identities import bot_identity_issue, bot_identity_revoke
from apps.bots.models import Bot, FleetHost
from apps.bots.orphans import FLEET_MARK_ENV, Leftover, fleet_id, fleet_mark, leftovers_find, leftovers_stop
from apps.bots.wakeup import Wakeup
from apps.bots.zygote import ForkedProcess, Template, TemplateError, child_subreaper, die_with_parent
from apps.bots.zygote import worker_argv as celery_worker_argv
from apps.vault import client as vault

logger = logging.getLogger(__name__)

ACTOR = "system:fleet"
BASE_DIR = Path(__file__).resolve().parents[2]
GRACE_S = 10.0
BACKOFF_MAX_S = 60.0
# A worker alive this long is considered healthy again: its next crash starts backoff at 1 s.
HEALTHY_AFTER_S = 60.0
REPORT_EVERY_S = 10.0
TOKEN_RENEW_EVERY_S = 3600.0
WORKER_MODES = ("spawn", "fork")
# Halts after which a worker gets SIGKILL at once (see Fleet._kill_now); a breaker's halt stops it gracefully.
KILL_HALTS = (Bot.HaltKind.EMERGENCY, Bot.HaltKind.KILL)
KILL_FINISH_THREADS = 8
# The bookkeeping of workers a kill SIGKILLed (their rows, audit entries and Vault revocations: a few database writes
# and Vault calls per bot) waits until the kill has sent its cancels, at most this long: done at once, it took
# CPU and Vault from the kill's key reads and cancels (20 bots: click to zero open orders 375 -> 265 ms).
KILL_FINISH_DEFER_S = 1.0
KILL_FINISH_POLL_S = 0.02
# Whether the kill that halted at the given time has sent its cancels. Set by apps.killswitch when it loads (a
# layer above this one, which this module may not import); without it nothing waits.
kill_cancels_out: Callable[[dt.datetime], bool] | None = None
# A template not ready this long after its start (it preloads in a few seconds) is killed and started again.
TEMPLATE_READY_S = 120.0
# Credentials a bot worker must never inherit from the supervisor's own environment.
WITHHELD_ENV = (
    "VAULT_TOKEN",
    "VAULT_BOOTSTRAP_TOKEN",
    "VAULT_ROLE_ID",
    "VAULT_SECRET_ID",
    "VAULT_WRAPPED_SECRET_ID",
    "SANDBOX_API_KEY",
    "SANDBOX_API_SECRET",
    "BOT_ID",
)


def killed_by_halt(bot: Bot, *, halted_all: bool) -> bool:
    """Whether a bot's worker is stopped without a grace period: the kill switch or an emergency stop."""
    return halted_all or (bot.halted and bot.halt_kind in KILL_HALTS)


def backoff_s(failures: int) -> float:
    """1, 2, 4 ... seconds after the 1st, 2nd, 3rd ... consecutive crash, at most 60."""
    return float(min(BACKOFF_MAX_S, 2 ** max(0, failures - 1)))


@dataclass
class Worker:
    bot_id: int
    proc: subprocess.Popen[bytes] | ForkedProcess
    started_at: float
    live: bool
    secret_id_accessor: str = ""
    stop_deadline: float | None = None
    stop_reason: str = ""
    log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Backoff:
    failures: int = 0
    next_start: float = 0.0


@dataclass
class Fleet:
    """Starts and stops bot workers; not thread-safe, driven by one loop."""

    process_vault: vault.ProcessVault | None
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    grace_s: float = GRACE_S
    log_dir: Path | None = None
    workers: dict[int, Worker] = field(default_factory=dict)
    backoff: dict[int, Backoff] = field(default_factory=dict)
    # This supervisor runs the bots whose `host` is this label; supervisors on other machines
    # (sharing the database, broker and Vault) run theirs.
    host_label: str = field(default_factory=lambda: str(settings.FLEET_HOST_LABEL))
    # "spawn": a fresh `celery worker` process per bot; "fork": forked from the preloaded template.
    worker_mode: str = field(default_factory=lambda: str(settings.FLEET_WORKER_MODE))
    template: Template | None = None
    _template_backoff: Backoff = field(default_factory=Backoff)
    _started_at: dt.datetime = field(default_factory=timezone.now)
    _last_report: float = 0.0
    # The host's market-data feed: off by default (a test's supervisor runs only what it asks for);
    # `manage.py runfleet` turns it on, unless told --no-market-data.
    market_data: bool = False
    market_data_proc: subprocess.Popen[bytes] | None = None
    _market_data_backoff: Backoff = field(default_factory=Backoff)
    _market_data_started: float = 0.0
    _market_data_log: IO[bytes] | None = None
    # What a dead supervisor of this fleet left running is stopped before this one starts (apps/bots/orphans.py).
    _fleet: str = ""
    _leftovers_cleared: bool = False
    # Set once this supervisor listens for halts (before its first pass): a halt committed after it wakes the loop.
    listening: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.worker_mode not in WORKER_MODES:
            raise ValueError(f"FLEET_WORKER_MODE must be one of {WORKER_MODES}, not {self.worker_mode!r}")
        db = settings.DATABASES["default"]
        self._fleet = fleet_id(database=f"{db['HOST']}:{db['PORT']}/{db['NAME']}", host_label=self.host_label)

    # -- the reconcile loop ----------------------------------------------------------------

    def sync_once(self) -> None:
        """One pass: make the set of worker processes match the bots' desired states."""
        close_old_connections()
        self._report_in()
        if not self._leftovers_cleared:
            self.clear_leftovers()
        self._keep_market_data()
        if self.worker_mode == "fork":
            self._keep_template()
        bots = {bot.pk: bot for bot in Bot.objects.select_related("account").filter(host=self.host_label)}
        now = time.monotonic()
        halted_all = bool(self.workers) and global_halt_active()
        killed: list[tuple[Worker, Bot]] = []
        for bot_id, worker in list(self.workers.items()):
            bot = bots.get(bot_id)
            if worker.stop_deadline is not None:
                self._continue_stop(worker, bot or Bot.objects.filter(pk=bot_id).first(), now)
            elif bot is not None and not self.wants_worker(bot) and killed_by_halt(bot, halted_all=halted_all):
                killed.append((worker, bot))
            elif bot is None or not self.wants_worker(bot):
                elsewhere = Bot.objects.filter(pk=bot_id).first() if bot is None else None
                reason = "moved to another host" if elsewhere else ("deleted" if bot is None else "stopped")
                self._begin_stop(worker, bot or elsewhere, reason)
            elif worker.proc.poll() is not None:
                self._crashed(worker, bot, now)
            elif now - worker.started_at >= HEALTHY_AFTER_S:
                self.backoff.pop(bot_id, None)
        for bot_id, bot in bots.items():
            if bot_id in self.workers or not self.wants_worker(bot):
                if not self.wants_worker(bot) and bot_id not in self.workers:
                    self.backoff.pop(bot_id, None)
                    self._settle_stopped(bot)
                continue
            pending = self.backoff.get(bot_id)
            if pending is not None and now < pending.next_start:
                continue
            self.start(bot, restart=pending is not None)
        if killed:
            self._kill_now(killed, halted_all=halted_all)

    def _keep_template(self) -> None:
        """Start the template if there is none or it died (running workers do not depend on it)."""
        now = time.monotonic()
        if self.template is not None and self.template.alive():
            if self.template.poll_ready():
                self._template_backoff = Backoff()
                return
            if now - self.template.started_at < TEMPLATE_READY_S:
                return
            logger.error(
                "fleet: the bot worker template (pid %s) is not ready after %.0f s",
                self.template.pid,
                now - self.template.started_at,
            )
            self.template.stop(timeout=0.0)
        if now < self._template_backoff.next_start:
            return
        if self.template is not None:
            # A template that dies before it is ready again and again (a broken install) is retried with backoff.
            if not self.template.ready:
                self._template_backoff.failures += 1
                self._template_backoff.next_start = now + backoff_s(self._template_backoff.failures)
            code = self.template.proc.returncode if self.template.proc is not None else None
            logger.warning(
                "fleet: the bot worker template (pid %s) exited with %s; starting a new one", self.template.pid, code
            )
            self.template.stop()
            if self.template.log is not None:
                self.template.log.close()
        log = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = open(self.log_dir / "template.log", "ab")  # noqa: SIM115 - kept open by the template
        self.template = Template(self.worker_env({}), log=log, nice=settings.FLEET_WORKER_NICE)
        self.template.start()

    def _keep_market_data(self) -> None:
        """Start the market-data feed if it is wanted and not running (again after a crash, with backoff)."""
        proc = self.market_data_proc
        if proc is not None and proc.poll() is None:
            return
        now = time.monotonic()
        if proc is not None:
            self.market_data_proc = None
            if self._market_data_log is not None:
                self._market_data_log.close()
                self._market_data_log = None
            if now - self._market_data_started >= HEALTHY_AFTER_S:
                self._market_data_backoff = Backoff()
            self._market_data_backoff.failures += 1
            self._market_data_backoff.next_start = now + backoff_s(self._market_data_backoff.failures)
            logger.warning("fleet: the market-data feed (pid %s) exited with %s", proc.pid, proc.returncode)
        if not self.market_data or now < self._market_data_backoff.next_start:
            return
        log: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = open(self.log_dir / "marketdata.log", "ab")  # noqa: SIM115 - closed when the feed ends
        try:
            self.market_data_proc = subprocess.Popen(
                [sys.executable, str(BASE_DIR / "manage.py"), "runmarketdata", "--host-label", self.host_label],
                env=self.worker_env({}),
                cwd=BASE_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT if log else None,
                start_new_session=True,
                # If the supervisor is killed outright, its children get SIGTERM instead of running on
                # unsupervised. (The supervisor runs no threads, so preexec_fn is safe.)
                preexec_fn=die_with_parent(os.getpid()),
            )
        except OSError as exc:
            # The bots read the exchange by REST meanwhile; try again later.
            logger.error("fleet: could not start the market-data feed: %s", exc)
            if log is not None:
                log.close()
            self._market_data_backoff.failures += 1
            self._market_data_backoff.next_start = now + backoff_s(self._market_data_backoff.failures)
            return
        self._market_data_log = log
        self._market_data_started = now
        logger.info("fleet: market-data feed started (pid %s)", self.market_data_proc.pid)

    def stop_market_data(self) -> None:
        """Stop the feed (SIGTERM, SIGKILL after the grace period); it is not started again unless wanted."""
        proc, self.market_data_proc = self.market_data_proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if self._market_data_log is not None:
            self._market_data_log.close()
            self._market_data_log = None

    def warm_up(self, timeout: float = 120.0) -> bool:
        """Fork mode: start the template and wait (at most `timeout` s) until it can fork; True when it can."""
        if self.worker_mode != "fork":
            return True
        self._keep_template()
        return self.template is not None and self.template.poll_ready(timeout=timeout)

    # -- what a dead supervisor left behind -----------------------------------------------

    def clear_leftovers(self) -> None:
        """Stop what a dead supervisor of this fleet left running; revoke the Vault tokens its workers held.

        Once, before this supervisor starts anything: a bot never runs in two workers, not even for the moments a
        worker of the dead supervisor takes to finish its tick (see apps/bots/orphans.py). Should it fail (the
        database), the next pass tries again, and no bot starts meanwhile.
        """
        found = leftovers_find(self._fleet)
        if found.elsewhere:
            logger.error(
                "fleet: another live supervisor of host label %r runs the workers of bots %s: run one per label",
                self.host_label,
                sorted(found.elsewhere),
            )
        if found.leftovers:
            self._stop_leftovers(found.leftovers)
        # A dead supervisor revoked nothing: any token a worker reported is left over, whether it still ran or not.
        left = Bot.objects.filter(host=self.host_label).exclude(vault_token_accessor="")
        for bot in left.exclude(pk__in=[*found.elsewhere, *self.workers]):
            self.revoke_identity(bot.pk)
            record(actor=ACTOR, action="bot.orphan_identity_revoked", target=bot, data={"reason": "supervisor died"})
            logger.warning("bot %s: revoked the Vault token its worker held under a supervisor that died", bot.pk)
        self._leftovers_cleared = True

    def _stop_leftovers(self, leftovers: list[Leftover]) -> None:
        workers = [x for x in leftovers if x.bot_id is not None]
        logger.warning(
            "fleet: stopping %d process(es) a supervisor that died left running (pids %s)",
            len(leftovers),
            ", ".join(str(x.pid) for x in leftovers),
        )
        bots = Bot.objects.in_bulk([x.bot_id for x in workers])
        for bot_id in bots:
            Bot.objects.filter(pk=bot_id).update(observed_state=Bot.Observed.STOPPING)
            bot_events.bot_state(bot_id)
        outcomes = leftovers_stop(leftovers, self.grace_s)
        for leftover in workers:
            outcome = outcomes[leftover.pid]
            log = logger.error if outcome == "still running" else logger.warning
            log("bot %s: leftover worker (pid %s): %s", leftover.bot_id, leftover.pid, outcome)
            record(
                actor=ACTOR,
                action="bot.worker_orphan_stopped",
                target=bots.get(leftover.bot_id) or ("bots.bot", leftover.bot_id),
                data={"pid": leftover.pid, "supervisor_pid": leftover.supervisor_pid, "outcome": outcome},
            )

    def wants_worker(self, bot: Bot) -> bool:
        return bot.host == self.host_label and bot.desired_state == Bot.Desired.RUNNING and not bot.halted

    def _report_in(self) -> None:
        """Register this supervisor's label (every REPORT_EVERY_S), so the bot form can offer it."""
        now = time.monotonic()
        if now - self._last_report < REPORT_EVERY_S:
            return
        FleetHost.objects.update_or_create(
            label=self.host_label,
            defaults={
                "hostname": socket.gethostname()[:255],
                "pid": os.getpid(),
                "started_at": self._started_at,
                "last_seen": timezone.now(),
            },
        )
        self._last_report = now

    def _settle_stopped(self, bot: Bot) -> None:
        # A bot nobody runs: show it as stopped (or halted), unless the state already says so.
        target = Bot.Observed.HALTED if bot.halted else Bot.Observed.STOPPED
        if bot.observed_state != target:
            Bot.objects.filter(pk=bot.pk).update(observed_state=target)
            bot_events.bot_state(bot.pk)

    # -- start -----------------------------------------------------------------------------

    def start(self, bot: Bot, *, restart: bool = False) -> Worker | None:
        live = bot.mode == Bot.Mode.LIVE
        if self.worker_mode == "fork" and (self.template is None or not self.template.poll_ready()):
            return None  # the template is still preloading: no identity is issued before a worker can use it
        extra: dict[str, str] = {"BOT_ID": str(bot.pk)}
        secret_id_accessor = ""
        try:
            if live:
                identity = bot_identity_issue(self._vault(), bot)
                secret_id_accessor = identity.secret_id_accessor
                extra |= {"VAULT_ROLE_ID": identity.role_id, "VAULT_WRAPPED_SECRET_ID": identity.wrapping_token}
        except vault.VaultError as exc:
            logger.error("bot %s: could not issue its Vault identity: %s", bot.pk, exc)
            self._failed(bot, time.monotonic(), f"vault: {exc}")
            return None
        Bot.objects.filter(pk=bot.pk).update(observed_state=Bot.Observed.STARTING)
        bot_events.bot_state(bot.pk)
        try:
            proc, log = self._spawn(bot.pk, extra)
        except TemplateError as exc:
            # The identity was never handed to a worker: take it away again, and retry with backoff.
            logger.error("bot %s: could not fork its worker: %s", bot.pk, exc)
            if live:
                self.revoke_identity(bot.pk, secret_id_accessor)
            if self.template is not None:
                self.template.stop(timeout=1.0)  # started again on the next pass
            self._failed(bot, time.monotonic(), f"template: {exc}")
            return None
        worker = Worker(bot.pk, proc, time.monotonic(), live, secret_id_accessor=secret_id_accessor, log=log)
        self.workers[bot.pk] = worker
        record(
            actor=ACTOR,
            action="bot.worker_restarted" if restart else "bot.worker_started",
            target=bot,
            data={"pid": proc.pid, "mode": bot.mode, "vault_role": bot.vault_role if live else None},
        )
        logger.info("bot %s: worker started (pid %s, %s)", bot.pk, proc.pid, bot.mode)
        return worker

    def worker_argv(self, bot_id: int) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "botconsole", *celery_worker_argv(bot_id)]

    def worker_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in self.env.items() if k not in WITHHELD_ENV}
        env["PYTHONUNBUFFERED"] = "1"
        # Finds it again if this supervisor dies (apps/bots/orphans.py).
        env[FLEET_MARK_ENV] = fleet_mark(self._fleet)
        return env | dict(extra)

    def _spawn(
        self, bot_id: int, extra: Mapping[str, str]
    ) -> tuple[subprocess.Popen[bytes] | ForkedProcess, IO[bytes] | None]:
        log: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = open(self.log_dir / f"bot-{bot_id}.log", "ab")  # noqa: SIM115 - closed when the worker ends
        if self.worker_mode == "fork" and self.template is not None:
            try:
                return self.template.fork(bot_id, extra, log), log
            except BaseException:
                if log is not None:
                    log.close()
                raise
        proc = subprocess.Popen(
            self.worker_argv(bot_id),
            env=self.worker_env(extra),
            cwd=BASE_DIR,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
            # Own process group: stopping the worker stops anything it forked, and a Ctrl-C
            # on the terminal reaches the supervisor only, which then stops workers in order.
            start_new_session=True,
            preexec_fn=die_with_parent(os.getpid(), nice=settings.FLEET_WORKER_NICE),
        )
        return proc, log

    # -- crash and backoff -----------------------------------------------------------------

    def _crashed(self, worker: Worker, bot: Bot, now: float) -> None:
        code = worker.proc.returncode
        self._forget(worker)
        logger.warning("bot %s: worker (pid %s) exited with code %s", bot.pk, worker.pid, code)
        self._failed(bot, now, f"worker exited with code {code}", pid=worker.pid, code=code)

    def _failed(self, bot: Bot, now: float, reason: str, **data: Any) -> None:
        state = self.backoff.setdefault(bot.pk, Backoff())
        state.failures += 1
        delay = backoff_s(state.failures)
        state.next_start = now + delay
        Bot.objects.filter(pk=bot.pk).update(observed_state=Bot.Observed.ERROR)
        bot_events.bot_state(bot.pk)
        record(
            actor=ACTOR,
            action="bot.worker_crashed",
            target=bot,
            data={**data, "reason": reason, "failures": state.failures, "restart_in_s": delay},
        )

    # -- stop ------------------------------------------------------------------------------

    def _begin_stop(self, worker: Worker, bot: Bot | None, reason: str) -> None:
        worker.stop_reason = reason
        worker.stop_deadline = time.monotonic() + self.grace_s
        if bot is not None:
            Bot.objects.filter(pk=bot.pk).update(observed_state=Bot.Observed.STOPPING)
            bot_events.bot_state(bot.pk)
        self._signal(worker, signal.SIGTERM)

    def _kill_now(self, killed: list[tuple[Worker, Bot]], *, halted_all: bool) -> None:
        """Workers of halted bots: SIGKILL all at once, then reap them, then take their identities away.

        A kill or emergency stop gives no grace period. The order gate refuses these bots' orders
        already (the halt is committed), so a tick cut short loses nothing the kill does not clean up
        (it cancels what is open on the exchange after the workers are gone), and a worker that exits
        on its own would spend a second of CPU on its shutdown while the kill needs that CPU for its
        cancels. SIGKILL costs the machine nothing, and the secrets go with the process. What follows (rows,
        audit, the identity's revocation) waits for the kill's cancels, briefly (KILL_FINISH_DEFER_S).
        """
        for worker, bot in killed:
            worker.stop_reason = "kill switch" if halted_all else f"halted ({bot.get_halt_kind_display().lower()})"
            worker.stop_deadline = time.monotonic()
            self._signal(worker, signal.SIGKILL)
        for worker, _ in killed:
            with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
                worker.proc.wait(timeout=5)
        self._await_kill_cancels(killed, halted_all=halted_all)

        def finish(item: tuple[Worker, Bot]) -> None:
            try:
                self._finish_stop(*item)
            finally:
                connection.close()  # this thread's own database connection

        with ThreadPoolExecutor(max_workers=min(KILL_FINISH_THREADS, len(killed))) as pool:
            list(pool.map(finish, killed))

    def _await_kill_cancels(self, killed: list[tuple[Worker, Bot]], *, halted_all: bool) -> None:
        """Wait (at most KILL_FINISH_DEFER_S) until the kill behind these halts has sent its cancels."""
        check = kill_cancels_out
        halted = [bot.halted_at for _, bot in killed if bot.halted_at is not None]
        since = global_halt_state().since if halted_all else (min(halted) if halted else None)
        if check is None or since is None:
            return
        deadline = time.monotonic() + KILL_FINISH_DEFER_S
        try:
            while time.monotonic() < deadline and not check(since):
                time.sleep(KILL_FINISH_POLL_S)
        except Exception:  # only a wait: the bookkeeping goes ahead
            logger.warning("fleet: could not tell whether the kill's cancels are out", exc_info=True)

    def _continue_stop(self, worker: Worker, bot: Bot | None, now: float) -> None:
        if worker.proc.poll() is None:
            if worker.stop_deadline is not None and now >= worker.stop_deadline:
                self._signal(worker, signal.SIGKILL)
                worker.proc.wait(timeout=5)
            else:
                return
        self._finish_stop(worker, bot)

    def _finish_stop(self, worker: Worker, bot: Bot | None) -> None:
        self._forget(worker)
        self.backoff.pop(worker.bot_id, None)
        if bot is not None:
            halted = bot.halted
            Bot.objects.filter(pk=bot.pk).update(observed_state=Bot.Observed.HALTED if halted else Bot.Observed.STOPPED)
            bot_events.bot_state(bot.pk)
        record(
            actor=ACTOR,
            action="bot.worker_stopped",
            target=bot if bot is not None else ("bots.bot", worker.bot_id),
            data={"pid": worker.pid, "code": worker.proc.returncode, "reason": worker.stop_reason},
        )
        logger.info("bot %s: worker stopped (%s)", worker.bot_id, worker.stop_reason)

    def stop(self, bot_id: int, reason: str = "stopped") -> None:
        """Stop one worker now (blocking up to the grace period)."""
        worker = self.workers.get(bot_id)
        if worker is None:
            return
        bot = Bot.objects.filter(pk=bot_id).first()
        if worker.stop_deadline is None:
            self._begin_stop(worker, bot, reason)
        self._wait_stopped([worker])

    def shutdown(self) -> None:
        """Stop every worker this supervisor started: SIGTERM all, then wait, then SIGKILL."""
        close_old_connections()
        workers = list(self.workers.values())
        for worker in workers:
            if worker.stop_deadline is None:
                bot = Bot.objects.filter(pk=worker.bot_id).first()
                # The bot stays desired-running; the next supervisor starts it again.
                worker.stop_reason = "supervisor shutdown"
                worker.stop_deadline = time.monotonic() + self.grace_s
                self._signal(worker, signal.SIGTERM)
                if bot is not None:
                    Bot.objects.filter(pk=bot.pk).update(observed_state=Bot.Observed.STOPPING)
                    bot_events.bot_state(bot.pk)
        self._wait_stopped(workers)
        self.stop_market_data()
        if self.template is not None:
            self.template.stop()
            if self.template.log is not None:
                self.template.log.close()
            self.template = None
            # Every forked worker is reaped: stop adopting orphans (only ours were ever meant).
            child_subreaper(False)

    def _wait_stopped(self, workers: list[Worker]) -> None:
        while any(w.bot_id in self.workers for w in workers):
            now = time.monotonic()
            for worker in workers:
                if worker.bot_id in self.workers:
                    self._continue_stop(worker, Bot.objects.filter(pk=worker.bot_id).first(), now)
            time.sleep(0.05)

    def _signal(self, worker: Worker, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.pid, sig)

    def _forget(self, worker: Worker) -> None:
        """The worker's process has ended: reap it and take away its Vault identity."""
        self.workers.pop(worker.bot_id, None)
        # Anything it forked into its group goes too.
        self._signal(worker, signal.SIGKILL)
        if worker.log is not None:
            worker.log.close()
        if worker.live:
            self.revoke_identity(worker.bot_id, worker.secret_id_accessor)

    def revoke_identity(self, bot_id: int, secret_id_accessor: str = "") -> None:
        bot_identity_revoke(self._vault(), bot_id, secret_id_accessor)

    def _vault(self) -> vault.ProcessVault:
        if self.process_vault is None:
            self.process_vault = vault.from_settings()
        return self.process_vault

    # -- the long-running loop -------------------------------------------------------------

    def run(self, *, poll_s: float = 1.0, stop: threading.Event | None = None) -> None:
        """Reconcile every poll_s seconds until `stop` is set (or a signal unwinds us)."""
        stop = stop or threading.Event()
        last_renew = time.monotonic()
        wakeup = Wakeup()
        if wakeup.listen():
            self.listening.set()
        try:
            while not stop.is_set():
                try:
                    self.sync_once()
                except Exception:  # one bad pass must not take every bot down
                    logger.exception("fleet: reconcile pass failed")
                if self.process_vault is not None and time.monotonic() - last_renew > TOKEN_RENEW_EVERY_S:
                    with contextlib.suppress(vault.VaultError):
                        self.process_vault.token_renew_self()
                    last_renew = time.monotonic()
                if not stop.is_set():
                    wakeup.wait(poll_s, stop)  # at once when a halt commits
        finally:
            wakeup.close()
            self.shutdown()
