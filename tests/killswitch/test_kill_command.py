"""`manage.py killswitch`: the halt first whatever the reason, exit 0 only for a run that ended "done"."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from apps.bots.halts import global_halt_active, global_halt_state
from apps.bots.models import Bot
from apps.killswitch import revoke
from apps.killswitch.models import KillRun
from tests.harness import Harness
from tests.killswitch.support import is_clean
from tests.killswitch.test_engine import Trader, open_orders, rest_orders, traders  # noqa: F401 - fixture
from tests.processes import process_env

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def shell_vault(services: Harness, settings: Any) -> Callable[[], None]:
    """What `as_process control killswitch` gives the command: the control worker's Vault token (once called)."""

    def switch() -> None:
        settings.VAULT_TOKEN = services.tokens["control"].token
        settings.VAULT_ADDR = services.vault_addr

    return switch


def killswitch(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("killswitch", *args, stdout=out, stderr=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


@pytest.mark.parametrize("reason", ["key\x00leak\u202e", "\x01" * 20_000, ""], ids=["nul-rtl", "20k-controls", "empty"])
def test_the_command_halts_and_cleans_up_whatever_the_reason_says(
    sandbox: Any,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    shell_vault: Callable[[], None],
    reason: str,
) -> None:
    team = traders(2)
    rest_orders(team, 2)
    shell_vault()
    code, out = killswitch("--reason", reason)
    assert code == 0, out
    run = KillRun.objects.get()
    assert run.status == KillRun.Status.DONE and run.requested_via == "shell" and is_clean(run.reason, 500)
    assert global_halt_active() and is_clean(global_halt_state().reason, 300)
    assert "Orders cancelled: 4" in out and "Orders still open: 0" in out
    assert all(open_orders(sandbox, t) == [] for t in team)


def test_the_command_exits_non_zero_when_the_run_did_not_end_done(
    sandbox: Any,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    shell_vault: Callable[[], None],
    monkeypatch: Any,
) -> None:
    (trader,) = traders(1)
    rest_orders([trader], 2)
    # A worker no fleet supervisor reports stopped (waited for 1 s instead of 15): every order is cancelled,
    # but "0 still open" cannot be verified, so the run is not done.
    Bot.objects.filter(pk=trader.bot.pk).update(observed_state=Bot.Observed.RUNNING)
    monkeypatch.setattr(revoke, "STOP_WAIT_S", 1.0)
    shell_vault()
    code, out = killswitch("--reason", "no fleet")
    assert code == 1, out
    assert open_orders(sandbox, trader) == []
    assert "Done with problems" in out and "Orders still open: unknown" in out and global_halt_active()


@pytest.mark.parametrize("raw", ["abc", "1 OR 1=1", "0", "-5", "1.5", str(2**63)])
def test_a_malformed_bot_id_is_a_usage_error_and_halts_nothing(raw: str) -> None:
    with pytest.raises(CommandError, match="--bot"):
        call_command("killswitch", "--bot", raw, "--reason", "x")
    assert not global_halt_active() and not KillRun.objects.exists()


def test_a_bot_that_does_not_exist_halts_nothing() -> None:
    with pytest.raises(CommandError, match="No bot with id 987654"):
        call_command("killswitch", "--bot", "987654", "--reason", "x")
    assert not global_halt_active() and not KillRun.objects.exists()


def test_undecodable_bytes_in_the_reason_on_the_command_line_still_halt(
    sandbox: Any,
    sandbox_url: str,
    services: Harness,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    tmp_path: Path,
) -> None:
    (trader,) = traders(1)
    rest_orders([trader], 1)
    env = process_env(services, token=services.tokens["control"].token, var_dir=tmp_path, sandbox_url=sandbox_url)
    # Not UTF-8: Python hands the command these bytes as unpaired surrogates, which no database can store.
    argv = [sys.executable.encode(), b"manage.py", b"killswitch", b"--reason", b"leak \xff\xfe \x1b[31m"]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=90)
    print(done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")[-3000:])
    assert done.returncode == 0
    run = KillRun.objects.get()
    assert global_halt_active() and run.status == KillRun.Status.DONE
    assert run.reason == "leak \ufffd\ufffd [31m" and open_orders(sandbox, trader) == []
