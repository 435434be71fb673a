"""Kill latency: click (kill_request) to every order cancelled and verified, with 1, 5 and 20 bots x 50 resting orders.

Each bot is a live bot on its own sandbox account holding a real Vault token (logged in through its own
AppRole, as its worker would), with 50 resting orders placed through ccxt on its key. The bots have no
worker process (20 real workers are too heavy for 2 cores alongside the rest), so the "stop" step has
nothing to wait for; `tests/killswitch/test_kill_fleet.py` covers real workers. The kill is executed by a
real control worker process (`celery -Q control`), as in production: the queue hop is part of the figure.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from apps.bots.halts import global_halt_clear
from apps.bots.identities import token_accessor_report
from apps.bots.models import Bot
from apps.exchanges.services import exchange_account_create
from apps.killswitch.models import KillRun
from apps.killswitch.services import kill_request
from apps.vault import client as vault
from tests.fleet_support import ControlWorker, fleet_vault, wait_until  # noqa: F401 - fixture
from tests.harness import Harness
from tests.keys import Key

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]
Report = Callable[[str, dict[str, str]], None]

SYMBOL = "BTC/USDT"
# KILL_BENCH_BOTS=20 measures one size only.
BOT_COUNTS = tuple(int(n) for n in os.environ.get("KILL_BENCH_BOTS", "1,5,20").split(","))
RESTING = 50
RUNS = 10
STEPS = ("revoke", "stop", "purge", "cancel", "verify", "balances")


@pytest.fixture
def control_worker(services: Harness, sandbox_url: str, tmp_path: Path) -> Iterator[ControlWorker]:
    worker = ControlWorker(services, tmp_path / "control", sandbox_url)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


def _bot(n: int, key: Key) -> tuple[Bot, Any]:
    account, _ = exchange_account_create(
        label=f"bench-kill-{key.api_key[-8:]}",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    bot = Bot.objects.create(
        name=f"bench-kill-{n}-{key.api_key[-6:]}",
        account=account,
        strategy="grid",
        symbols=[SYMBOL],
        mode=Bot.Mode.LIVE,
        max_order_notional=Decimal("100"),
        max_position_notional=Decimal("1000"),
        daily_loss_limit=Decimal("100"),
        max_drawdown_pct=Decimal("10"),
        desired_state=Bot.Desired.RUNNING,
    )
    return bot, key.raw_ccxt(django_settings.SANDBOX_URL)


def _log_in(fv: vault.ProcessVault, services: Harness, bot: Bot) -> str:
    """What a starting worker does: unwrap its SecretID and log in with its AppRole; returns the token's accessor."""
    secret_id = vault.unwrap(services.vault_addr, fv.bot_secret_id_wrapped(bot.pk).wrapping_token)["secret_id"]
    return vault.approle_login(services.vault_addr, fv.bot_role_id(bot.pk), str(secret_id)).accessor


def _rest(client: Any) -> None:
    for _ in range(RESTING):
        client.create_order(SYMBOL, "limit", "buy", 0.001, 30000)


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _figures(count: int, verified: list[int], finished: list[int], step_ms: dict[str, list[int]]) -> dict[str, str]:
    mean = {name: statistics.mean(values) for name, values in step_ms.items()}
    whole = statistics.mean(verified)
    # The path from the click to "verified"; "stop" (waiting for the fleet) runs beside it, not on it.
    path = ("queue", "revoke", "purge", "cancel", "verify")
    shares = [f"{name} {_pct(mean[name], whole)}" for name in path]
    shares.append(f"other {_pct(whole - sum(mean[name] for name in path), whole)}")
    return {
        f"{count:>2} bots x {RESTING} orders, click to verified": (
            f"p50 {statistics.median(verified):.0f} ms, max {max(verified)} ms ({RUNS} runs)"
        ),
        f"{count:>2} bots, share of that (mean)": ", ".join(shares),
        f"{count:>2} bots, then": (
            f"balances {mean['balances']:.0f} ms; click to report finished p50 {statistics.median(finished):.0f} ms, "
            f"max {max(finished)} ms (stop, beside: {mean['stop']:.0f} ms)"
        ),
    }


@pytest.mark.usefixtures("pinned_price")
def test_kill_latency(
    sandbox: Any,
    new_key: Callable[..., Key],
    fleet_vault: vault.ProcessVault,  # noqa: F811
    control_worker: ControlWorker,
    services: Harness,
    bench_report: Report,
) -> None:
    figures: dict[str, str] = {}
    bots: list[tuple[Bot, Any]] = []
    try:
        for count in BOT_COUNTS:
            while len(bots) < count:
                key = new_key()
                # 10 runs place 500 orders a minute per key: above the sandbox's Binance-like 1200 requests/min.
                sandbox.admin.set_rate_limit(100_000, api_key=key.api_key)
                bot, client = _bot(len(bots), key)
                fleet_vault.policy_write(bot.vault_role, vault.bot_policy_text(str(bot.account_id)))
                fleet_vault.bot_role_write(bot.pk)
                bots.append((bot, client))
            verified: list[int] = []
            finished: list[int] = []
            step_ms: dict[str, list[int]] = {name: [] for name in ("queue", *STEPS)}
            for _ in range(RUNS):
                global_halt_clear(actor="system:test")
                with ThreadPoolExecutor(count) as pool:
                    accessors = list(pool.map(lambda pair: _log_in(fleet_vault, services, pair[0]), bots[:count]))
                    list(pool.map(lambda pair: _rest(pair[1]), bots[:count]))
                for (bot, _), accessor in zip(bots[:count], accessors, strict=True):
                    token_accessor_report(bot.pk, accessor, ttl_s=600)  # as the worker reports it
                time.sleep(0.2)  # let the machine settle after placing the orders
                finished_run = KillRun.objects.filter(
                    pk=kill_request(actor="system:test", reason="bench").pk, status__in=["done", "failed"]
                )
                run = wait_until(finished_run.first, "the control worker to finish the kill", timeout=120, every=0.02)
                assert run.status == KillRun.Status.DONE, run.problems
                assert run.orders_cancelled == count * RESTING and run.orders_still_open == 0
                assert run.steps[0]["detail"].startswith(f"{count} bot token(s) revoked"), run.steps[0]
                steps = {s["name"]: s for s in run.steps}
                timeline = ", ".join(f"{name} {s['ms']} ms (ends at {s['at_ms']})" for name, s in steps.items())
                print(f"{count} bots: click to finished {run.duration_ms} ms; {timeline}")
                verified.append(int(steps["verify"]["at_ms"]))
                finished.append(int(run.duration_ms or 0))
                assert run.started_at is not None
                step_ms["queue"].append(int((run.started_at - run.created_at).total_seconds() * 1000))
                for name in STEPS:
                    step_ms[name].append(int(steps[name]["ms"]))
            figures |= _figures(count, verified, finished, step_ms)
    finally:
        for bot, _ in bots:
            fleet_vault.bot_role_delete(bot.pk)
            fleet_vault.policy_delete(bot.vault_role)
    bench_report("kill latency (DB-only live bots with real Vault tokens; real control worker; sandbox)", figures)
