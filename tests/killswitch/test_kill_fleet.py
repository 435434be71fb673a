"""The kill switch against the whole machinery: real bot workers started by the fleet supervisor, a real
control worker, the real sandbox exchange and OpenBao; once with Redis up and once with Valkey stopped.

Five live grid bots on five sandbox accounts each rest 20 buy orders (placed by their own strategy through
the order gate); a sixth live bot (DCA, one market buy per tick) is the one that wants to order while it is
mid-tick. Every worker is caught mid-tick by freezing the exchange (SIGSTOP) before the kill is pressed.
Then: bot tokens and SecretIDs revoked from the database alone, and the optional flatten on kill.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from apps.audit.models import AuditEntry
from apps.bots.fleet import Fleet
from apps.bots.halts import global_halt_state
from apps.bots.identities import token_accessor_report
from apps.bots.models import Bot
from apps.exchanges import port
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_create
from apps.killswitch.models import KillRun
from apps.killswitch.runner import kill_execute
from apps.killswitch.services import kill_request
from apps.strategies.base import OrderIntent
from apps.trading.gate import place_order
from apps.trading.ledger import ledger_for
from apps.trading.models import Order, Position
from apps.trading.sync import orders_sync
from apps.trading.tasks import RECONCILE_EVERY_TICKS
from apps.vault import client as vault
from tests.fleet_support import (  # noqa: F401 - fixtures
    ControlWorker,
    FleetLoop,
    alive,
    fleet,
    fleet_vault,
    frozen,
    valkey_stopped,
    wait_until,
    worker_env,
)
from tests.harness import Harness
from tests.keys import Key

pytestmark = pytest.mark.django_db(transaction=True)

SYMBOL = "BTC/USDT"
GRID_BOTS = 5
RESTING = 20
_names = itertools.count(1)


@pytest.fixture
def live_account(new_key: Callable[..., Key]) -> Callable[[], tuple[ExchangeAccount, Key]]:
    def make() -> tuple[ExchangeAccount, Key]:
        key = new_key()
        acct, _ = exchange_account_create(
            label=f"kill-fleet-{key.api_key[-8:]}",
            exchange_id="sandbox",
            credentials=key.form(),
            attested_no_withdrawals=False,
            actor="system:test",
        )
        return acct, key

    return make


def live_bot(acct: ExchangeAccount, strategy: str, params: dict[str, Any]) -> Bot:
    return Bot.objects.create(
        name=f"kill-fleet-{strategy}-{next(_names)}",
        account=acct,
        strategy=strategy,
        params=params,
        symbols=[SYMBOL],
        mode=Bot.Mode.LIVE,
        tick_interval_s=1,
        max_order_notional=Decimal("100"),
        max_position_notional=Decimal("5000"),
        max_open_orders=50,
        max_orders_per_minute=100,
        daily_loss_limit=Decimal("100000"),
        max_drawdown_pct=Decimal("90"),
        desired_state=Bot.Desired.RUNNING,
    )


GRID = {"lower": "40000", "upper": "50000", "levels": RESTING, "order_amount": "0.001"}
DCA = {"quote_per_buy": "20", "every_ticks": 1, "take_profit_pct": "50"}


@pytest.fixture
def control_worker(services: Harness, sandbox_url: str, tmp_path: Path) -> Iterator[ControlWorker]:
    worker = ControlWorker(services, tmp_path / "control", sandbox_url)
    try:
        yield worker
    finally:
        worker.stop()
        print(f"--- control worker\n{worker.log()[-4000:]}")


def step(run: KillRun, name: str) -> str:
    return str(next(s["detail"] for s in run.steps if s["name"] == name))


@pytest.mark.parametrize("redis_state", ["up", "stopped"])
def test_a_kill_leaves_no_order_no_worker_and_no_token_and_a_mid_tick_worker_orders_nothing(
    redis_state: str,
    sandbox: Any,
    pinned_price: None,
    live_account: Callable[[], tuple[ExchangeAccount, Key]],
    fleet: Fleet,  # noqa: F811
    control_worker: ControlWorker,
    services: Harness,
    root_vault: vault.ProcessVault,
) -> None:
    grid = [(live_bot(acct, "grid", GRID), key) for acct, key in (live_account() for _ in range(GRID_BOTS))]
    dca_acct, dca_key = live_account()
    dca = live_bot(dca_acct, "dca", DCA)
    bots = [bot for bot, _ in grid] + [dca]
    keys = [key for _, key in grid] + [dca_key]

    loop = FleetLoop(fleet).start()
    try:
        control_worker.wait_ready()
        wait_until(
            lambda: Bot.objects.filter(pk__in=[b.pk for b in bots], observed_state="running").count() == len(bots),
            "every bot worker to run",
            timeout=180,
        )
        wait_until(
            lambda: all(len(sandbox.admin.open_orders(k.api_key)) == RESTING for _, k in grid),
            f"{RESTING} resting orders per grid bot",
            timeout=120,
        )
        wait_until(lambda: len(sandbox.admin.orders(dca_key.api_key)) >= 2, "the DCA bot's first buys", timeout=60)
        pids = loop.pids()
        assert set(pids) == {b.pk for b in bots} and all(alive(pid) for pid in pids.values())
        accessors = dict(Bot.objects.filter(pk__in=pids).values_list("pk", "vault_token_accessor"))
        for bot in bots:  # every worker holds a valid token of its own role, and reported its accessor
            assert root_vault.token_lookup_accessor(accessors[bot.pk])["meta"]["role_name"] == bot.vault_role

        # Every RECONCILE_EVERY_TICKS ticks a worker reconciles after its tick: freeze well away from that,
        # so that the DCA worker's next exchange call is inside a strategy tick.
        wait_until(
            lambda: 2 <= ledger_for(dca).generation % RECONCILE_EVERY_TICKS <= RECONCILE_EVERY_TICKS - 4,
            "the DCA bot between two reconciliations",
        )
        with contextlib.ExitStack() as down:
            # Freeze the exchange: every worker's next exchange call blocks, mid-tick (or mid-reconcile).
            thaw = down.enter_context(frozen(sandbox.proc))
            threading.Event().wait(2.5)
            if redis_state == "stopped":
                down.enter_context(valkey_stopped(services))
            pressed: list[KillRun] = []
            # In a thread: an order in flight at the freeze holds the halt back until the exchange answers.
            press = threading.Thread(target=lambda: pressed.append(kill_request(actor="system:test", reason="test")))
            press.start()
            press.join(timeout=3)
            thaw()
            press.join(timeout=30)
            halt_since = global_halt_state().since
            assert pressed and halt_since is not None
            run = pressed[0]

            run = wait_until(
                lambda: KillRun.objects.filter(pk=run.pk, status__in=["done", "failed"]).first(),
                "the control worker to finish the kill",
                timeout=90,
            )
            print(f"kill with Redis {redis_state}: {run.duration_ms} ms; steps {run.steps}")
            assert run.status == KillRun.Status.DONE, run.problems
            if redis_state == "stopped":
                assert "Redis unavailable" in step(run, "purge")  # Redis was down for the whole kill

            # Zero open orders on every account.
            assert run.orders_cancelled == GRID_BOTS * RESTING and run.orders_still_open == 0
            assert all(sandbox.admin.open_orders(k.api_key) == [] for k in keys)
            # Every worker process is gone, as the report says.
            assert "reported all stopped" in step(run, "stop") and "0 worker processes remain" in step(run, "stop")
            assert not any(alive(pid) for pid in pids.values())
            # Every bot token is revoked.
            # The fleet supervisor, woken by the halt, may have revoked them (and cleared a bot's accessor) before
            # the revoke step read them: what counts is that no token answers any more.
            assert "failed" not in step(run, "revoke"), step(run, "revoke")
            for bot in bots:
                with pytest.raises(vault.VaultError):
                    root_vault.token_lookup_accessor(accessors[bot.pk])
            # The DCA worker was mid-tick at the halt (a tick that would have bought): the supervisor killed it
            # without grace (SIGKILL), and no order of any bot reached the exchange after the halt committed.
            stopped = AuditEntry.objects.filter(action="bot.worker_stopped", target_id=str(dca.pk)).latest("seq")
            assert stopped.data["code"] == -9 and stopped.data["reason"] == "kill switch", stopped.data
            since_ms = int(halt_since.timestamp() * 1000)
            late = [o for k in keys for o in sandbox.admin.orders(k.api_key) if int(o["time"]) > since_ms]
            assert late == [], late
            assert not Order.objects.filter(created_at__gt=halt_since).exists()
    finally:
        loop.stop()


def _login(fleet_vault: vault.ProcessVault, services: Harness, bot: Bot) -> vault.LoginToken:  # noqa: F811
    """What the fleet and a starting worker do: role, policy, wrapped SecretID, unwrap, AppRole login."""
    fleet_vault.policy_write(bot.vault_role, vault.bot_policy_text(str(bot.account_id)))
    fleet_vault.bot_role_write(bot.pk)
    role_id = fleet_vault.bot_role_id(bot.pk)
    secret_id = vault.unwrap(services.vault_addr, fleet_vault.bot_secret_id_wrapped(bot.pk).wrapping_token)
    return vault.approle_login(services.vault_addr, role_id, str(secret_id["secret_id"]))


def test_with_redis_stopped_a_kill_revokes_bot_tokens_from_the_database_and_destroys_unused_secret_ids(
    live_account: Callable[[], tuple[ExchangeAccount, Key]],
    fleet_vault: vault.ProcessVault,  # noqa: F811
    control_vault: vault.ProcessVault,
    root_vault: vault.ProcessVault,
    services: Harness,
) -> None:
    acct, _ = live_account()
    bot = live_bot(acct, "grid", GRID)
    try:
        login = _login(fleet_vault, services, bot)
        token_accessor_report(bot.pk, login.accessor, ttl_s=60)  # what the worker does once logged in
        bot_vault = vault.ProcessVault(services.vault_addr, login.token)
        assert bot_vault.kv_read(acct.vault_path)["apiKey"]
        # A SecretID issued for a worker that has not used it yet.
        role_id = fleet_vault.bot_role_id(bot.pk)
        pending = fleet_vault.bot_secret_id_wrapped(bot.pk)

        with valkey_stopped(services):
            run = kill_request(actor="system:test", reason="redis is down")
            run = kill_execute(run_id=run.pk, process_vault=control_vault)

        assert run.status == KillRun.Status.DONE, run.problems
        assert step(run, "revoke") == "1 bot token revoked; 1 unused bot credential destroyed"
        with pytest.raises(vault.VaultError):
            root_vault.token_lookup_accessor(login.accessor)
        with pytest.raises(vault.VaultForbidden):
            bot_vault.kv_read(acct.vault_path)  # the bot's token gets 403
        secret_id = vault.unwrap(services.vault_addr, pending.wrapping_token)["secret_id"]
        with pytest.raises(vault.VaultError):
            vault.approle_login(services.vault_addr, role_id, str(secret_id))  # destroyed before use
    finally:
        fleet_vault.bot_role_delete(bot.pk)
        fleet_vault.policy_delete(bot.vault_role)


def test_a_kill_refuses_to_revoke_an_accessor_that_is_not_the_bots_own(
    live_account: Callable[[], tuple[ExchangeAccount, Key]],
    fleet_vault: vault.ProcessVault,  # noqa: F811
    control_vault: vault.ProcessVault,
    root_vault: vault.ProcessVault,
    services: Harness,
) -> None:
    acct, _ = live_account()
    target, other = live_bot(acct, "grid", GRID), live_bot(acct, "grid", GRID)
    try:
        other_login = _login(fleet_vault, services, other)
        # A compromised worker of `target` reports `other`'s accessor as its own; `other` runs elsewhere.
        Bot.objects.filter(pk=target.pk).update(vault_token_accessor=other_login.accessor)
        run = kill_request(actor="system:test", reason="one bot", bot=target)
        run = kill_execute(run_id=run.pk, process_vault=control_vault)
        assert run.status == KillRun.Status.FAILED
        assert any("is not its own" in p for p in run.problems), run.problems
        assert "1 token refused (not the bot's own)" in step(run, "revoke")
        assert root_vault.token_lookup_accessor(other_login.accessor)["meta"]["role_name"] == other.vault_role
    finally:
        for bot in (target, other):
            fleet_vault.bot_role_delete(bot.pk)
            fleet_vault.policy_delete(bot.vault_role)


# -- flatten on kill ------------------------------------------------------------------------------


def _buy_position(bot: Bot, key: Key, amount: str) -> port.Exchange:
    """A real market buy through the order gate, its fill stored: the bot holds a position. Returns the exchange."""
    Bot.objects.filter(pk=bot.pk).update(max_order_notional=Decimal("1000"))
    bot.refresh_from_db()
    exchange = key.exchange()
    intent = OrderIntent(SYMBOL, "buy", "market", Decimal(amount), None, "flatten-test-buy")
    place_order(bot=bot, intent=intent, exchange=exchange, price=Decimal("60000"))
    orders_sync(bot=bot, exchange=exchange)
    key.raw_ccxt(django_settings.SANDBOX_URL).create_order(
        SYMBOL, "limit", "buy", 0.001, 30000
    )  # and one resting order
    return exchange


def test_a_kill_market_sells_the_position_of_a_bot_flagged_by_an_admin_and_of_no_other(
    sandbox: Any,
    pinned_price: None,
    live_account: Callable[[], tuple[ExchangeAccount, Key]],
    control_vault: vault.ProcessVault,
) -> None:
    (acct, key), (other_acct, other_key) = live_account(), live_account()
    flagged, other = live_bot(acct, "dca", DCA), live_bot(other_acct, "dca", DCA)
    Bot.objects.filter(pk=flagged.pk).update(flatten_on_kill=True)
    flagged.refresh_from_db()
    for bot, k in ((flagged, key), (other, other_key)):
        _buy_position(bot, k, "0.01")
    held = Position.objects.get(bot=flagged).base_quantity  # 0.01 less the fee, paid in BTC: 0.00999
    assert held > 0 and sandbox.admin.balances(key.api_key)["BTC"].free == 1 + held  # 1 BTC to start with
    other_btc = sandbox.admin.balances(other_key.api_key)["BTC"]

    run = kill_request(actor="system:test", reason="flatten")
    run = kill_execute(run_id=run.pk, process_vault=control_vault)

    assert run.status == KillRun.Status.DONE, run.problems
    assert [s["name"] for s in run.steps] == ["revoke", "stop", "purge", "cancel", "verify", "flatten", "balances"]
    assert step(run, "flatten").startswith(f"{flagged.name} sold {held.normalize():f} {SYMBOL} (average ")
    assert "left" not in step(run, "flatten")
    assert run.orders_cancelled == 2 and run.orders_still_open == 0
    # The flagged bot's position is sold on the exchange and in the books; the other bot's is untouched.
    assert sandbox.admin.balances(key.api_key)["BTC"].free == Decimal("1")
    assert sandbox.admin.balances(other_key.api_key)["BTC"] == other_btc
    assert Decimal(run.balances_after[str(acct.pk)]["total"]["BTC"]) == 1  # the report shows it too
    assert Position.objects.get(bot=flagged).base_quantity == 0
    assert Position.objects.get(bot=other).base_quantity > 0
    sale = Order.objects.get(bot=flagged, side="sell")
    assert (sale.type, sale.status, sale.filled, sale.intent_tag) == (
        "market",
        "filled",
        held,
        f"kill-flatten-{run.pk}-0",
    )
    entry = AuditEntry.objects.get(action="killswitch.flatten_sold")
    assert entry.actor == "system:killswitch" and Decimal(entry.data["sold"]) == held
    assert not Order.objects.filter(bot=other, side="sell").exists()


def test_a_kill_sells_nothing_when_no_bot_is_flagged(
    sandbox: Any,
    pinned_price: None,
    live_account: Callable[[], tuple[ExchangeAccount, Key]],
    control_vault: vault.ProcessVault,
) -> None:
    acct, key = live_account()
    bot = live_bot(acct, "dca", DCA)
    _buy_position(bot, key, "0.01")
    btc = sandbox.admin.balances(key.api_key)["BTC"]
    run = kill_execute(run_id=kill_request(actor="system:test", reason="t").pk, process_vault=control_vault)
    assert run.status == KillRun.Status.DONE, run.problems
    assert "flatten" not in [s["name"] for s in run.steps]
    assert sandbox.admin.balances(key.api_key)["BTC"] == btc
    assert not Order.objects.filter(side="sell").exists()
