"""The fleet supervisor against real OpenBao, Redis and PostgreSQL, with real bot worker processes.

The supervisor runs in this test process (`Fleet.sync_once()`), holding only the fleet token; the
workers it starts are real `celery worker -Q bot.<id>` processes on the test database (fixtures in
conftest.py).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from django.conf import settings

from apps.audit.models import AuditEntry
from apps.bots import fleet as fleet_mod
from apps.bots import identities
from apps.bots.fleet import Fleet
from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.trading import runtime
from apps.vault import client as vault
from tests.harness import Harness
from tests.keys import Key
from tests.leaks import redis_dump

START_TIMEOUT_S = 60.0


def make_bot(acct: ExchangeAccount, name: str, *, mode: str = "live", desired: str = "running") -> Bot:
    return Bot.objects.create(
        name=name,
        account=acct,
        strategy="grid",
        symbols=["BTC/USDT"],
        mode=mode,
        tick_interval_s=1,
        max_order_notional=Decimal("100"),
        max_position_notional=Decimal("1000"),
        daily_loss_limit=Decimal("100"),
        max_drawdown_pct=Decimal("10"),
        desired_state=desired,
    )


def wait_for(check: Callable[[], Any], what: str, timeout: float = START_TIMEOUT_S, fleet: Fleet | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fleet is not None:
            fleet.sync_once()
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def observed(bot: Bot) -> str:
    return str(Bot.objects.values_list("observed_state", flat=True).get(pk=bot.pk))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; so is a process reaped between the two looks.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def tick_messages(bot: Bot) -> list[Any]:
    """The decoded bodies of this bot's task messages: queued, or held by its worker until their ETA."""
    r = redis.Redis.from_url(settings.REDIS_URL)
    messages = [json.loads(m) for m in r.lrange(bot.queue, 0, -1)]
    for value in r.hgetall("unacked").values():
        message, _exchange, routing_key = json.loads(value)
        if routing_key == bot.queue:
            messages.append(message)
    return [json.loads(base64.b64decode(m["body"])) for m in messages]


# -- identity ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("supervisor", ["fleet", "spawn_fleet"])  # forked (the default), and spawned
def test_a_running_bot_gets_a_worker_with_its_own_identity_and_stopping_takes_both_away(
    request: pytest.FixtureRequest,
    supervisor: str,
    account: Callable[[str], tuple[ExchangeAccount, Key]],
    root_vault: vault.ProcessVault,
) -> None:
    fleet: Fleet = request.getfixturevalue(supervisor)
    acct, key = account("Fleet identity")
    bot = make_bot(acct, "identity-bot")

    fleet.sync_once()
    worker = fleet.workers[bot.pk]
    assert observed(bot) in ("starting", "running")
    wait_for(lambda: observed(bot) == "running", "the worker to report in", fleet=fleet)
    assert alive(worker.pid)
    # Nicer than its supervisor: a fleet that asks more CPU than there is waits behind the web and the kill.
    assert psutil.Process(worker.pid).nice() == min(19, psutil.Process().nice() + settings.FLEET_WORKER_NICE) > 0
    if fleet.worker_mode == "spawn":  # its own command line
        cmdline = Path(f"/proc/{worker.pid}/cmdline").read_text().split("\0")
        assert cmdline[cmdline.index("-Q") + 1] == bot.queue and cmdline[cmdline.index("-P") + 1] == "solo"
    else:  # forked: the same arguments, given to celery inside the process; its banner names the one queue
        assert worker.log is not None
        banner = Path(worker.log.name).read_text()
        assert re.findall(r"^\s*\.> (\S+)\s+exchange=", banner, re.M) == [bot.queue], banner[-2000:]
        assert ".> concurrency: 1 (solo)" in banner

    # Its own token: issued by AppRole bot-<id>, holding the policy bot-<id> only.
    r: Any = redis.Redis.from_url(settings.REDIS_URL)
    accessor = wait_for(lambda: r.get(identities.token_accessor_key(bot.pk)), "the token accessor").decode()
    info = root_vault.token_lookup_accessor(accessor)
    assert info["meta"]["role_name"] == bot.vault_role
    assert sorted(info["policies"]) == sorted(["default", bot.vault_role])

    # Nothing it could misuse in its environment: no Vault token, no SecretID, no key.
    environ = Path(f"/proc/{worker.pid}/environ").read_bytes().decode(errors="replace").split("\0")
    names = {item.split("=", 1)[0] for item in environ if "=" in item}
    assert "VAULT_TOKEN" not in names and "VAULT_SECRET_ID" not in names
    if fleet.worker_mode == "spawn":  # a forked worker got them through a pipe (tests/bots/test_template.py)
        assert "BOT_ID" in names and "VAULT_ROLE_ID" in names
    assert key.secret not in "\n".join(environ)
    assert "CANARY" not in "\n".join(environ)

    # A few ticks go round; no message (queued or held for its ETA) and no Redis value holds the secret.
    time.sleep(2.5)
    dump = redis_dump()
    assert key.secret not in dump and "CANARY" not in dump
    bodies = tick_messages(bot)
    assert bodies, "no tick message in flight"
    for args, kwargs, _embed in bodies:
        assert args == [bot.pk] and set(kwargs) == {"chain"}

    Bot.objects.filter(pk=bot.pk).update(desired_state="stopped")
    wait_for(lambda: bot.pk not in fleet.workers, "the worker to stop", timeout=20, fleet=fleet)
    assert not alive(worker.pid)
    assert observed(bot) == "stopped"
    with pytest.raises(vault.VaultError):
        root_vault.token_lookup_accessor(accessor)  # revoked
    with pytest.raises(Exception, match="None, on get"):
        root_vault._client.auth.approle.read_role(role_name=bot.vault_role)  # role gone
    actions = list(AuditEntry.objects.filter(actor="system:fleet").values_list("action", flat=True))
    assert actions == ["bot.worker_started", "bot.worker_stopped"]


@pytest.mark.django_db(transaction=True)
def test_a_bot_token_reads_its_own_account_secret_and_gets_403_on_another(
    fleet_vault: vault.ProcessVault, account: Callable[[str], tuple[ExchangeAccount, Key]], services: Harness
) -> None:
    own, own_key = account("Own account")
    other, _ = account("Other account")
    bot = make_bot(own, "policy-bot", desired="stopped")
    fleet_vault.policy_write(bot.vault_role, vault.bot_policy_text(str(own.id)))
    fleet_vault.bot_role_write(bot.pk)
    role_id = fleet_vault.bot_role_id(bot.pk)
    wrapped = fleet_vault.bot_secret_id_wrapped(bot.pk)
    assert wrapped.creation_path == vault.bot_secret_id_path(bot.pk) and wrapped.secret_id_accessor
    try:
        # What the worker does with it.
        secret_id = vault.unwrap(services.vault_addr, wrapped.wrapping_token)["secret_id"]
        login = vault.approle_login(services.vault_addr, role_id, secret_id)
        assert login.ttl_s <= 15 * 60 and login.renewable
        bot_vault = vault.ProcessVault(services.vault_addr, login.token)
        assert bot_vault.kv_read(own.vault_path)["secret"] == own_key.secret
        with pytest.raises(vault.VaultForbidden):
            bot_vault.kv_read(other.vault_path)
        # The SecretID was single-use.
        with pytest.raises(vault.VaultError):
            vault.approle_login(services.vault_addr, role_id, secret_id)
        # The supervisor itself can read no secret and cannot get a SecretID unwrapped or of its choosing.
        with pytest.raises(vault.VaultForbidden):
            fleet_vault.kv_read(own.vault_path)
        with pytest.raises(Exception, match="permission denied"):
            fleet_vault._client.adapter.post(f"/v1/{vault.bot_secret_id_path(bot.pk)}")
        with pytest.raises(Exception, match="permission denied"):
            fleet_vault._client.adapter.post(
                f"/v1/auth/approle/role/{bot.vault_role}/custom-secret-id", json={"secret_id": "mine"}, wrap_ttl="30s"
            )
        # Nor touch a role that is not a bot's.
        with pytest.raises(vault.VaultForbidden):
            fleet_vault.policy_write("botconsole-control", 'path "*" { capabilities = ["read"] }')
    finally:
        fleet_vault.bot_role_delete(bot.pk)
        fleet_vault.policy_delete(bot.vault_role)


def test_a_bot_policy_is_not_rendered_for_a_malformed_account_id() -> None:
    with pytest.raises(vault.VaultError):
        vault.bot_policy_text("*")
    assert 'path "kv/data/exchange-accounts/0b3c-9"' in vault.bot_policy_text("0b3c-9")


# -- bootstrap refuses a tampered wrapping token ---------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_worker_refuses_a_wrapping_token_created_for_another_role(
    fleet: Fleet,
    fleet_vault: vault.ProcessVault,
    account: Callable[[str], tuple[ExchangeAccount, Key]],
    services: Harness,
    tmp_path: Path,
) -> None:
    acct, _ = account("Tamper")
    mine = make_bot(acct, "tamper-mine", desired="stopped")
    other = make_bot(acct, "tamper-other", desired="stopped")
    for bot in (mine, other):
        fleet_vault.policy_write(bot.vault_role, vault.bot_policy_text(str(acct.id)))
        fleet_vault.bot_role_write(bot.pk)
    try:
        role_id = fleet_vault.bot_role_id(mine.pk)
        foreign = fleet_vault.bot_secret_id_wrapped(other.pk)
        # In process: refused before unwrapping, so the token is not even consumed.
        with pytest.raises(runtime.BootstrapRefused, match="not 'auth/approle/role/bot-"):
            runtime.bootstrap(
                bot_id=mine.pk, addr=services.vault_addr, role_id=role_id, wrapping_token=foreign.wrapping_token
            )
        assert vault.wrapping_lookup(services.vault_addr, foreign.wrapping_token)["creation_path"].endswith(
            f"bot-{other.pk}/secret-id"
        )
        # A real worker process handed that token exits without running.
        proc = subprocess.Popen(
            fleet.worker_argv(mine.pk),
            env=fleet.worker_env(
                {"BOT_ID": str(mine.pk), "VAULT_ROLE_ID": role_id, "VAULT_WRAPPED_SECRET_ID": foreign.wrapping_token}
            ),
            cwd=fleet_mod.BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=START_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == runtime.EXIT_REFUSED, output[-2000:]
        assert "refusing to start" in output and "wrapping token was created at" in output
        assert foreign.wrapping_token not in output
    finally:
        for bot in (mine, other):
            fleet_vault.bot_role_delete(bot.pk)
            fleet_vault.policy_delete(bot.vault_role)


# -- crash and restart ------------------------------------------------------------------------


def test_backoff_doubles_up_to_a_minute() -> None:
    assert [fleet_mod.backoff_s(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_is_restarted_with_backoff_and_a_fresh_identity(
    fleet: Fleet, account: Callable[[str], tuple[ExchangeAccount, Key]], root_vault: vault.ProcessVault
) -> None:
    acct, _ = account("Crash")
    bot = make_bot(acct, "crash-bot")
    r: Any = redis.Redis.from_url(settings.REDIS_URL)
    fleet.sync_once()
    wait_for(lambda: observed(bot) == "running", "the first worker", fleet=fleet)
    first = fleet.workers[bot.pk]
    first_accessor = wait_for(lambda: r.get(identities.token_accessor_key(bot.pk)), "its accessor").decode()

    os.killpg(first.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    killed_at = time.monotonic()
    fleet.sync_once()
    assert bot.pk not in fleet.workers and observed(bot) == "error"
    assert fleet.backoff[bot.pk].failures == 1
    with pytest.raises(vault.VaultError):
        root_vault.token_lookup_accessor(first_accessor)  # the dead worker's token is revoked at once

    second = wait_for(lambda: fleet.workers.get(bot.pk), "the restart", timeout=10, fleet=fleet)
    assert second.pid != first.pid
    assert time.monotonic() - killed_at >= 0.9  # waited its 1 s backoff
    wait_for(lambda: observed(bot) == "running", "the restarted worker to report in", fleet=fleet)

    # A second crash in a row waits twice as long.
    os.killpg(second.pid, signal.SIGKILL)
    second.proc.wait(timeout=10)
    fleet.sync_once()
    assert fleet.backoff[bot.pk].failures == 2
    # The next start is scheduled 2 s after the crash (checked as an upper bound: a slow machine only shrinks it).
    assert fleet_mod.backoff_s(2) == 2
    assert 0 < fleet.backoff[bot.pk].next_start - time.monotonic() <= 2.0
    actions = list(AuditEntry.objects.filter(actor="system:fleet").values_list("action", flat=True))
    assert actions == ["bot.worker_started", "bot.worker_crashed", "bot.worker_restarted", "bot.worker_crashed"]


@pytest.mark.django_db(transaction=True)
def test_a_paper_bot_gets_a_worker_without_any_vault_identity(
    fleet: Fleet, account: Callable[[str], tuple[ExchangeAccount, Key]], root_vault: vault.ProcessVault
) -> None:
    acct, _ = account("Paper")
    bot = make_bot(acct, "paper-bot", mode="paper")
    fleet.sync_once()
    worker = fleet.workers[bot.pk]
    wait_for(lambda: observed(bot) == "running", "the paper worker", fleet=fleet)
    environ = Path(f"/proc/{worker.pid}/environ").read_bytes().decode(errors="replace")
    assert "VAULT_ROLE_ID" not in environ and "VAULT_WRAPPED_SECRET_ID" not in environ and "VAULT_TOKEN=" not in environ
    with pytest.raises(Exception, match="None, on get"):
        root_vault._client.auth.approle.read_role(role_name=bot.vault_role)
    fleet.shutdown()
    assert not alive(worker.pid) and observed(bot) == "stopped"


# -- manage.py runfleet ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_runfleet_starts_workers_and_sigterm_leaves_none_behind(
    worker_env: dict[str, str], account: Callable[[str], tuple[ExchangeAccount, Key]], tmp_path: Path
) -> None:
    acct, _ = account("Runfleet")
    live = make_bot(acct, "runfleet-live")
    paper = make_bot(acct, "runfleet-paper", mode="paper")
    proc = subprocess.Popen(
        [sys.executable, str(fleet_mod.BASE_DIR / "manage.py"), "runfleet", "--poll", "0.5"],
        cwd=fleet_mod.BASE_DIR,
        env=worker_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(lambda: observed(live) == "running" and observed(paper) == "running", "both workers")
        pids = [p for p in psutil.Process(proc.pid).children() if "celery" in " ".join(p.cmdline())]
        assert len(pids) == 2
        # A worker runs in its own process group: a Ctrl-C on the terminal reaches the supervisor only.
        assert all(os.getpgid(p.pid) == p.pid for p in pids)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output[-3000:]
    assert not any(alive(p.pid) for p in pids)
    assert observed(live) == "stopped" and observed(paper) == "stopped"


@pytest.mark.django_db(transaction=True)
def test_a_running_bot_trades_through_its_worker_and_a_sigkill_doubles_no_order(
    fleet: Fleet, account: Callable[[str], tuple[ExchangeAccount, Key]], sandbox: Any
) -> None:
    """Start -> orders reach the sandbox -> fills are stored -> SIGKILL the worker -> restart -> no duplicates."""
    from apps.trading.models import BotLedger, Fill, Order

    acct, key = account("Trading")
    # Cash only: holding the default 1 BTC, moving the price would trip the bot's daily-loss breaker.
    sandbox.admin.set_balances(key.api_key, {"USDT": "10000", "BTC": "0"})
    sandbox.admin.set_price("BTC/USDT", "30000")  # the default grid (20000-40000, 10 levels) buys below
    try:
        bot = make_bot(acct, "grid-trader")
        placed = wait_for(lambda: len(sandbox.admin.open_orders(key.api_key)) >= 5, "grid orders", fleet=fleet)
        assert placed
        sandbox.admin.set_price("BTC/USDT", "28000")  # crosses the highest buy level
        wait_for(lambda: Fill.objects.filter(order__bot=bot).exists(), "a stored fill", fleet=fleet)

        worker = fleet.workers[bot.pk]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.proc.wait(timeout=10)
        generation = BotLedger.objects.get(bot=bot).generation
        wait_for(lambda: fleet.workers.get(bot.pk) and observed(bot) == "running", "the restart", fleet=fleet)
        wait_for(
            lambda: BotLedger.objects.get(bot=bot).generation >= generation + 3,
            "ticks after the restart",
            fleet=fleet,
        )
    finally:
        sandbox.admin.release_price("BTC/USDT")

    assert not Bot.objects.get(pk=bot.pk).halted
    orders = sandbox.admin.orders(key.api_key)
    client_ids = [o["clientOrderId"] for o in orders]
    assert len(client_ids) == len(set(client_ids))
    resting = [(o["side"], o["price"]) for o in orders if o["status"] in ("NEW", "PARTIALLY_FILLED")]
    assert len(resting) == len(set(resting)), f"a grid level was ordered twice: {sorted(resting)}"
    ours = set(Order.objects.filter(bot=bot).values_list("client_order_id", flat=True))
    assert set(client_ids) <= ours  # everything on the exchange was placed (and recorded) by the bot
    assert Fill.objects.filter(order__bot=bot).count() == len(
        set(Fill.objects.filter(order__bot=bot).values_list("trade_id", flat=True))
    )


def _database_ports(pid: int) -> set[int]:
    """The local ports of the TCP connections a worker (and its children) holds to PostgreSQL."""
    from django.db import connection

    pg_port = int(connection.settings_dict["PORT"])
    root = psutil.Process(pid)
    ports: set[int] = set()
    for proc in [root, *root.children(recursive=True)]:
        for conn in proc.net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == pg_port and conn.status == psutil.CONN_ESTABLISHED:
                ports.add(conn.laddr.port)
    return ports


@pytest.mark.django_db(transaction=True)
def test_a_worker_keeps_its_database_connection_from_tick_to_tick(
    fleet: Fleet, account: Callable[[str], tuple[ExchangeAccount, Key]]
) -> None:
    """Celery closes the database connection after every task unless told otherwise: a bot worker then opened a
    new PostgreSQL session (a backend process and a password exchange) every second. It keeps it, as the web
    process keeps one between requests."""
    acct, _ = account("Reuse")
    bot = make_bot(acct, "reuse-bot", mode="paper")
    wait_for(lambda: observed(bot) == "running", "the paper worker", fleet=fleet)
    worker = fleet.workers[bot.pk]
    seen: list[set[int]] = []
    for _ in range(5):
        beat = Bot.objects.values_list("last_heartbeat", flat=True).get(pk=bot.pk)
        wait_for(
            lambda b=beat: Bot.objects.values_list("last_heartbeat", flat=True).get(pk=bot.pk) != b,  # type: ignore[misc]
            "the next tick",
            fleet=fleet,
        )
        seen.append(_database_ports(worker.pid))
    assert seen[0], seen  # it holds a connection between ticks
    assert set().union(*seen) == seen[-1], seen  # and every connection it held is still open five ticks later


@pytest.mark.django_db(transaction=True)
def test_a_kill_takes_the_workers_at_once_and_their_bookkeeping_after_its_cancels(
    fleet: Fleet, account: Callable[[str], tuple[ExchangeAccount, Key]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor SIGKILLs a kill's workers as soon as the halt commits, but writes their rows, audit entries
    and revocations only once the kill run has sent its cancels: they took CPU and Vault from the cancels."""
    import threading

    from django.db import connection

    from apps.bots.halts import global_halt_clear, global_halt_set
    from apps.killswitch.models import KillRun

    monkeypatch.setattr(fleet_mod, "KILL_FINISH_DEFER_S", 60.0)  # a wide window to look into; the cancels end it
    acct, _ = account("Deferred bookkeeping")
    bot = make_bot(acct, "deferred-bookkeeping", mode="paper")
    wait_for(lambda: observed(bot) == "running", "the worker", fleet=fleet)
    pid = fleet.workers[bot.pk].pid
    stopped = AuditEntry.objects.filter(action="bot.worker_stopped", target_id=str(bot.pk))
    try:
        global_halt_set(reason="test", actor="system:test")  # what the panic button commits first
        Bot.objects.filter(pk=bot.pk).update(desired_state="stopped")
        run = KillRun.objects.create(scope=KillRun.Scope.ALL, reason="test")

        def one_pass() -> None:
            try:
                fleet.sync_once()
            finally:
                connection.close()

        sync = threading.Thread(target=one_pass)
        sync.start()
        wait_for(lambda: not alive(pid), "the worker to be killed", timeout=10)
        threading.Event().wait(0.5)
        assert sync.is_alive() and not stopped.exists()  # killed; its bookkeeping waits for the cancels
        KillRun.objects.filter(pk=run.pk).update(
            status=KillRun.Status.RUNNING, steps=[{"name": "cancel", "ms": 5, "at_ms": 5, "detail": ""}]
        )
        sync.join(timeout=30)
        assert not sync.is_alive()
        assert stopped.get().data["code"] == -signal.SIGKILL and observed(bot) == "stopped"
    finally:
        global_halt_clear(actor="system:test")
