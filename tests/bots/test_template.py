"""Bot workers forked from the preloaded template (FLEET_WORKER_MODE=fork), against the real services.

The supervisor runs in this test process, as in test_fleet.py; the template is a real `python -m
apps.bots.zygote` process and each worker a real Celery worker forked from it. Isolation is the same as
for spawned workers: own process (reparented to the supervisor, own session), own Vault identity, own queue;
the template and a worker that has not logged in hold no token and no secret.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
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
from apps.bots.zygote import ForkedProcess, Template, child_subreaper
from apps.exchanges.models import ExchangeAccount
from apps.trading import runtime
from apps.vault import client as vault
from tests.bots.test_fleet import alive, make_bot, observed, tick_messages, wait_for
from tests.fleet_support import fork_fleet, memory_holds  # noqa: F401 - fixture
from tests.harness import Harness
from tests.keys import Key

pytestmark = pytest.mark.django_db(transaction=True)
QUEUE_LINE = re.compile(r"^\s*\.> (\S+)\s+exchange=", re.M)


def _template_pid(fleet: Fleet) -> int:
    assert fleet.template is not None and fleet.template.pid is not None
    return fleet.template.pid


def _accessor_of(r: Any, bot: Bot) -> Callable[[], Any]:
    return lambda: r.get(identities.token_accessor_key(bot.pk))


def test_a_forked_worker_has_its_own_process_identity_and_queue_and_the_template_holds_no_secret(
    fork_fleet: Fleet,  # noqa: F811
    account: Callable[[str], tuple[ExchangeAccount, Key]],
    root_vault: vault.ProcessVault,
    services: Harness,
    tmp_path: Path,
) -> None:
    acct, key = account("Forked identity")
    other_acct, other_key = account("Forked other")
    bot = make_bot(acct, "forked-live")
    other = make_bot(other_acct, "forked-other")
    paper = make_bot(acct, "forked-paper", mode="paper")
    wait_for(
        lambda: all(observed(b) == "running" for b in (bot, other, paper)), "three forked workers", fleet=fork_fleet
    )
    template = _template_pid(fork_fleet)
    workers = {b.pk: fork_fleet.workers[b.pk] for b in (bot, other, paper)}

    # Own process: forked, reparented to the supervisor (this process), each in its own session, named after its bot.
    for bot_id, worker in workers.items():
        assert isinstance(worker.proc, ForkedProcess)
        proc = psutil.Process(worker.pid)
        assert proc.ppid() == os.getpid() and worker.pid != template
        assert os.getpgid(worker.pid) == worker.pid and os.getsid(worker.pid) == worker.pid
        assert proc.name() == f"bot-{bot_id}" and proc.cmdline() == [
            "celery",
            "worker",
            "-Q",
            f"bot.{bot_id}",
            "(forked)",
        ]
    assert len({w.pid for w in workers.values()}) == 3

    # Own queue: each worker consumes its bot's queue and no other; its ticks go round on it.
    for b in (bot, other, paper):
        log = (tmp_path / "logs" / f"bot-{b.pk}.log").read_text()
        assert QUEUE_LINE.findall(log) == [b.queue], log[-2000:]
    time.sleep(2)
    assert tick_messages(bot) and all(args == [bot.pk] for args, _kwargs, _embed in tick_messages(bot))

    # Own Vault identity: a token from AppRole bot-<id> holding only its policy (which reads its own account only).
    r: Any = redis.Redis.from_url(settings.REDIS_URL)
    accessors: dict[int, str] = {}
    for b in (bot, other):
        accessors[b.pk] = wait_for(_accessor_of(r, b), "an accessor").decode()
        info = root_vault.token_lookup_accessor(accessors[b.pk])
        assert info["meta"]["role_name"] == b.vault_role
        assert sorted(info["policies"]) == sorted(["default", b.vault_role])
    assert accessors[bot.pk] != accessors[other.pk]
    assert not r.get(identities.token_accessor_key(paper.pk))  # the paper worker never logged in

    # The scanner finds a secret where one is: the live worker holds its own key's secret, not the other's.
    assert memory_holds(workers[bot.pk].pid, [key.secret, other_key.secret]) == {key.secret}

    # The template: no secret, no token, no identity; neither in its memory nor in its environment.
    tokens = [services.tokens[name].token for name in services.tokens] + [services.admin_token]
    assert memory_holds(template, [key.secret, other_key.secret, *tokens]) == set()
    environ = Path(f"/proc/{template}/environ").read_bytes().decode(errors="replace")
    for name in ("VAULT_TOKEN=", "VAULT_ROLE_ID=", "VAULT_WRAPPED_SECRET_ID=", "BOT_ID="):
        assert name not in environ
    assert psutil.Process(template).net_connections(kind="inet") == []  # no database, broker or Vault connection

    # A forked worker that never logs in (the paper bot's) holds no token and no secret either.
    assert memory_holds(workers[paper.pk].pid, [key.secret, other_key.secret, *tokens]) == set()

    # Stopping works as for a spawned worker: the process ends and its identity is taken away.
    Bot.objects.filter(pk=bot.pk).update(desired_state="stopped")
    wait_for(lambda: bot.pk not in fork_fleet.workers, "the worker to stop", timeout=20, fleet=fork_fleet)
    assert not alive(workers[bot.pk].pid) and observed(bot) == "stopped"
    assert workers[bot.pk].proc.returncode == 0  # a warm shutdown on SIGTERM
    with pytest.raises(vault.VaultError):
        root_vault.token_lookup_accessor(accessors[bot.pk])
    assert alive(workers[other.pk].pid) and alive(workers[paper.pk].pid)


def test_a_crashed_template_is_rebuilt_and_a_killed_worker_restarted(
    fork_fleet: Fleet,  # noqa: F811
    account: Callable[[str], tuple[ExchangeAccount, Key]],
    root_vault: vault.ProcessVault,
) -> None:
    acct, _ = account("Forked crash")
    first = make_bot(acct, "forked-first", mode="paper")
    wait_for(lambda: observed(first) == "running", "the first forked worker", fleet=fork_fleet)
    first_worker = fork_fleet.workers[first.pk]
    old_template = _template_pid(fork_fleet)

    os.kill(old_template, signal.SIGKILL)
    wait_for(lambda: not alive(old_template), "the template to die", timeout=10)
    fork_fleet.sync_once()
    assert _template_pid(fork_fleet) != old_template  # a new template is preloading
    assert alive(first_worker.pid) and observed(first) == "running"  # running workers do not depend on it

    # The next bot (live: it gets its identity once the new template can fork) starts from the new template.
    second = make_bot(acct, "forked-second")
    wait_for(lambda: observed(second) == "running", "a worker from the new template", fleet=fork_fleet)
    assert Bot.objects.get(pk=second.pk).vault_token_accessor

    # A forked worker killed outright is seen to exit, its identity revoked, and restarted after its backoff.
    r: Any = redis.Redis.from_url(settings.REDIS_URL)
    accessor = wait_for(lambda: r.get(identities.token_accessor_key(second.pk)), "its accessor").decode()
    killed = fork_fleet.workers[second.pk]
    os.killpg(killed.pid, signal.SIGKILL)
    killed.proc.wait(timeout=10)
    assert killed.proc.returncode == -signal.SIGKILL
    fork_fleet.sync_once()
    assert second.pk not in fork_fleet.workers and observed(second) == "error"
    with pytest.raises(vault.VaultError):
        root_vault.token_lookup_accessor(accessor)
    restarted = wait_for(lambda: fork_fleet.workers.get(second.pk), "the restart", timeout=10, fleet=fork_fleet)
    assert restarted.pid != killed.pid
    wait_for(lambda: observed(second) == "running", "the restarted worker", fleet=fork_fleet)
    actions = list(
        AuditEntry.objects.filter(actor="system:fleet", target_id=str(second.pk)).values_list("action", flat=True)
    )
    assert actions == ["bot.worker_started", "bot.worker_crashed", "bot.worker_restarted"]


def test_killing_the_supervisor_takes_its_forked_workers_and_template_with_it(
    worker_env: dict[str, str], account: Callable[[str], tuple[ExchangeAccount, Key]], tmp_path: Path
) -> None:
    acct, _ = account("Forked runfleet")
    live = make_bot(acct, "forked-runfleet-live")
    paper = make_bot(acct, "forked-runfleet-paper", mode="paper")
    log = tmp_path / "runfleet.log"
    proc = subprocess.Popen(
        [sys.executable, str(fleet_mod.BASE_DIR / "manage.py"), "runfleet", "--poll", "0.5"],
        cwd=fleet_mod.BASE_DIR,
        env=worker_env | {"FLEET_WORKER_MODE": "fork"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: observed(live) == "running" and observed(paper) == "running", "both forked workers")
        # The supervisor's children: the template, the two workers and the host's market-data feed.
        wait_for(lambda: len(psutil.Process(proc.pid).children()) == 4, "the market-data feed")
        children = {
            "runmarketdata" if "runmarketdata" in p.cmdline() else p.name(): p.pid
            for p in psutil.Process(proc.pid).children()
        }
        assert set(children) == {"bot-template", f"bot-{live.pk}", f"bot-{paper.pk}", "runmarketdata"}, log.read_text()[
            -3000:
        ]
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown: only PR_SET_PDEATHSIG can end the workers
        proc.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in children.values()), "the workers to die", timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        print(log.read_text(errors="replace")[-3000:])


def test_an_unknown_worker_mode_is_refused(worker_env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="FLEET_WORKER_MODE"):
        Fleet(process_vault=None, env=worker_env, worker_mode="thread")


def test_the_template_loads_the_sync_exchange_port_but_no_async_or_streaming_ccxt(worker_env: dict[str, str]) -> None:
    """A bot worker trades through the sync port: ccxt.async_support (~25 MB) and ccxt.pro stay unloaded."""
    code = (
        "import sys\n"
        "from apps.bots import zygote\n"
        "zygote._preload()\n"
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith(('ccxt.async_support', 'ccxt.pro'))}),"
        " 'ccxt' in sys.modules, 'apps.trading.tasks' in sys.modules, 'apps.exchanges.port' in sys.modules)"
    )
    env = {k: v for k, v in worker_env.items() if k != "VAULT_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=fleet_mod.BASE_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[] True True True"


def test_a_forked_worker_handed_another_bots_wrapping_token_refuses_it_without_consuming_it(
    fleet_vault: vault.ProcessVault,
    account: Callable[[str], tuple[ExchangeAccount, Key]],
    worker_env: dict[str, str],
    services: Harness,
    tmp_path: Path,
) -> None:
    acct, _ = account("Forked tamper")
    mine = make_bot(acct, "forked-tamper-mine", desired="stopped")
    other = make_bot(acct, "forked-tamper-other", desired="stopped")
    for bot in (mine, other):
        fleet_vault.policy_write(bot.vault_role, vault.bot_policy_text(str(acct.id)))
        fleet_vault.bot_role_write(bot.pk)
    template = Template({k: v for k, v in worker_env.items() if k != "VAULT_TOKEN"})
    log_path = tmp_path / "tamper.log"
    try:
        template.start()
        assert template.poll_ready(timeout=120)
        foreign = fleet_vault.bot_secret_id_wrapped(other.pk)
        identity = {
            "BOT_ID": str(mine.pk),
            "VAULT_ROLE_ID": fleet_vault.bot_role_id(mine.pk),
            "VAULT_WRAPPED_SECRET_ID": foreign.wrapping_token,
        }
        with log_path.open("ab") as log:
            worker = template.fork(mine.pk, identity, log)
        assert psutil.Process(worker.pid).ppid() == os.getpid()
        assert worker.wait(timeout=60) == runtime.EXIT_REFUSED
        output = log_path.read_text()
        assert "refusing to start" in output and "wrapping token was created at" in output
        assert foreign.wrapping_token not in output
        # Refused before unwrapping: the token still wraps the other bot's SecretID.
        assert vault.wrapping_lookup(services.vault_addr, foreign.wrapping_token)["creation_path"].endswith(
            f"bot-{other.pk}/secret-id"
        )
        assert observed(mine) != "running"
    finally:
        template.stop()
        child_subreaper(False)
        for bot in (mine, other):
            fleet_vault.bot_role_delete(bot.pk)
            fleet_vault.policy_delete(bot.vault_role)


def test_forked_workers_start_without_waiting_out_their_reparenting(
    fork_fleet: Fleet,  # noqa: F811
    account: Callable[[str], tuple[ExchangeAccount, Key]],
    tmp_path: Path,
) -> None:
    """A worker waits for its middle process to exit (it is then the supervisor's child). It used to read the middle
    process's pid only after the fork: when the middle process had exited first, that pid was already the
    supervisor's and the worker waited out the whole deadline (about one start in ten took 5 s more)."""
    acct, _ = account("Forked reparenting")
    bot = make_bot(acct, "forked-reparenting", mode="paper", desired="stopped")
    fork_fleet.sync_once()
    template = fork_fleet.template
    assert template is not None
    assert template.poll_ready(timeout=120)
    logs = []
    for n in range(12):
        log_path = tmp_path / f"worker-{n}.log"
        with open(log_path, "ab") as log:
            proc = template.fork(bot.pk, {"BOT_ID": str(bot.pk)}, log)
        logs.append(log_path)
        # Past its reparenting once celery prints its banner (or once it exited, whichever is first).
        wait_for(lambda p=log_path, w=proc: f"bot-{bot.pk}@" in p.read_text() or w.poll() is not None, "the banner")  # type: ignore[misc]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    texts = [p.read_text() for p in logs]
    assert all(f"bot-{bot.pk}@" in t for t in texts)  # every one became a worker
    assert not [t for t in texts if "not reparented" in t]


def _database_backends(pid: int) -> list[int]:
    """The PostgreSQL backend processes serving process `pid`'s connections."""
    from django.db import connection

    pg_port = int(connection.settings_dict["PORT"])
    ports = [
        c.laddr.port
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == pg_port and c.status == psutil.CONN_ESTABLISHED
    ]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)", [ports])
        return [int(row[0]) for row in cursor.fetchall()]


def test_a_worker_whose_shutdown_hangs_still_ends_soon_after_its_supervisor(
    worker_env: dict[str, str], account: Callable[[str], tuple[ExchangeAccount, Key]], tmp_path: Path
) -> None:
    """PR_SET_PDEATHSIG starts a warm shutdown, which waits for the tick: a tick that never ends (here its database
    connections frozen; in a 100-bot run celery retrying a broker that was gone) kept the worker running after its
    supervisor. Once its supervisor is gone, a worker gives its shutdown ORPHAN_GRACE_S and then exits."""
    acct, _ = account("Orphaned worker")
    bot = make_bot(acct, "orphaned-worker", mode="paper")
    log = tmp_path / "runfleet.log"
    proc = subprocess.Popen(
        [sys.executable, str(fleet_mod.BASE_DIR / "manage.py"), "runfleet", "--poll", "0.5", "--no-market-data"],
        cwd=fleet_mod.BASE_DIR,
        env=worker_env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    frozen: list[int] = []
    try:
        wait_for(lambda: observed(bot) == "running", "the worker")
        worker = next(p.pid for p in psutil.Process(proc.pid).children() if p.name() == f"bot-{bot.pk}")
        frozen = wait_for(lambda: _database_backends(worker), "the worker's database connections")
        for backend in frozen:
            os.kill(backend, signal.SIGSTOP)
        time.sleep(2.5)  # its next tick blocks on the frozen connection
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        wait_for(lambda: not alive(worker), "the worker to end", timeout=runtime.ORPHAN_GRACE_S + 30)
    finally:
        for backend in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(backend, signal.SIGCONT)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        print(log.read_text(errors="replace")[-3000:])
