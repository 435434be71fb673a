"""The exchange-side dead-man's switch of live bot workers, against the real sandbox exchange.

The fleet supervisor runs in this test process and starts real bot workers with a short countdown
(DEADMAN_TIMEOUT_S=3, refreshed every DEADMAN_REFRESH_S=1). Waiting "well past the timeout" is a
sleep of three timeouts followed by assertions on the sandbox's orders and countdown counters;
nothing here asserts on elapsed time.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import Client

from apps.alerts.models import Alert
from apps.audit.models import AuditEntry
from apps.bots.fleet import BASE_DIR, Fleet, Worker
from apps.bots.models import Bot
from apps.exchanges import port
from apps.exchanges.models import ExchangeAccount
from apps.trading import deadman, runtime
from tests.bots.test_fleet import make_bot, observed, wait_for
from tests.harness import Harness
from tests.keys import Key
from tests.leaks import redis_dump
from tests.people import Person
from tests.processes import process_env

TIMEOUT_S = 3
REFRESH_S = 1
WELL_PAST_S = 3 * TIMEOUT_S
CANCEL_DEADLINE_S = 60.0


@pytest.fixture
def worker_env(worker_env: dict[str, str]) -> dict[str, str]:
    """The shared worker environment with a short countdown, as an operator would set it."""
    return {**worker_env, "DEADMAN_TIMEOUT_S": str(TIMEOUT_S), "DEADMAN_REFRESH_S": str(REFRESH_S)}


@pytest.fixture
def resting(sandbox: Any) -> Iterator[Any]:
    """Hold BTC/USDT at 30000: the default grid (20000-40000) rests buy orders below it that never fill."""
    sandbox.admin.set_price("BTC/USDT", "30000")
    yield sandbox
    sandbox.admin.release_price("BTC/USDT")


def open_ids(sandbox: Any, key: Key) -> set[int]:
    return {int(o["orderId"]) for o in sandbox.admin.open_orders(key.api_key)}


def armed(sandbox: Any, key: Key) -> list[Any]:
    return [c for c in sandbox.admin.countdown(key.api_key) if c.active]


def fired(sandbox: Any, key: Key) -> int:
    return sum(c.triggered for c in sandbox.admin.countdown(key.api_key))


def reported(bot: Bot) -> dict[str, Any]:
    return deadman.deadman_state(bot.pk) or {}


def start_trading(
    fleet: Fleet, sandbox: Any, account: Callable[[str], tuple[ExchangeAccount, Key]], name: str
) -> tuple[Bot, Key, Worker]:
    acct, key = account(name)
    # Cash only, so that the grid rests buy orders and no sell can fill.
    sandbox.admin.set_balances(key.api_key, {"USDT": "10000", "BTC": "0"})
    bot = make_bot(acct, name)
    wait_for(lambda: observed(bot) == "running", "the worker to report in", fleet=fleet)
    wait_for(lambda: len(open_ids(sandbox, key)) >= 5, "resting grid orders", fleet=fleet)
    wait_for(lambda: armed(sandbox, key), "the countdown to be armed", fleet=fleet)
    return bot, key, fleet.workers[bot.pk]


# -- the exchange port's switch ------------------------------------------------------------------


def test_only_the_sandbox_and_classes_with_cancel_all_orders_after_offer_the_switch(sandbox_url: str) -> None:
    assert port.Exchange(exchange_id="sandbox").deadman_available
    # Binance spot has no countdownCancelAll (ccxt's binance lists it for futures only).
    assert not port.Exchange(exchange_id="binance").deadman_available
    assert port.Exchange(exchange_id="kraken").deadman_available
    with pytest.raises(port.ExchangeError, match="offers no dead-man's switch"):
        port.Exchange(exchange_id="binance").deadman_arm(symbols=["BTC/USDT"], timeout_ms=60_000)
    with pytest.raises(port.ExchangeError, match="positive timeout"):
        port.Exchange(exchange_id="sandbox").deadman_arm(symbols=["BTC/USDT"], timeout_ms=0)


def test_arm_sets_the_sandbox_countdown_disarm_clears_it_and_a_lapsed_one_cancels_the_orders(
    sandbox: Any, new_key: Callable[..., Key]
) -> None:
    key = new_key()
    exchange = key.exchange()
    bystander = new_key()  # another account's orders are not the countdown's business
    for raw in (key.raw_ccxt(sandbox.url), bystander.raw_ccxt(sandbox.url)):
        raw.create_order("BTC/USDT", "limit", "buy", 0.001, 10000)
    key.raw_ccxt(sandbox.url).create_order("ETH/USDT", "limit", "buy", 0.01, 1000)

    exchange.deadman_arm(symbols=["BTC/USDT"], timeout_ms=60_000)
    (countdown,) = sandbox.admin.countdown(key.api_key)
    assert (countdown.symbol, countdown.countdown_ms, countdown.active) == ("BTCUSDT", 60_000, True)

    exchange.deadman_disarm(symbols=["BTC/USDT"])
    assert not armed(sandbox, key)

    exchange.deadman_arm(symbols=["BTC/USDT"], timeout_ms=200)
    wait_for(lambda: not sandbox.admin.open_orders(key.api_key, "BTCUSDT"), "the countdown to cancel", timeout=30)
    assert fired(sandbox, key) == 1
    # Only that symbol of that account.
    assert len(sandbox.admin.open_orders(key.api_key, "ETHUSDT")) == 1
    assert len(sandbox.admin.open_orders(bystander.api_key)) == 1

    with pytest.raises(port.ExchangeError):
        exchange.deadman_arm(symbols=["NOPE/USDT"], timeout_ms=60_000)


# -- the worker: refresh, SIGKILL, clean stop -------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_sigkilled_workers_orders_are_cancelled_by_the_sandboxs_countdown(
    fleet: Fleet, resting: Any, account: Callable[[str], tuple[ExchangeAccount, Key]]
) -> None:
    bot, key, worker = start_trading(fleet, resting, account, "deadman-kill")
    before = open_ids(resting, key)

    # While the worker lives, its refreshes keep the countdown from running out.
    time.sleep(WELL_PAST_S)
    assert before <= open_ids(resting, key)
    assert fired(resting, key) == 0
    state = reported(bot)
    assert state["state"] == "armed" and state["symbols"] == ["BTC/USDT"] and state["timeout_s"] == TIMEOUT_S

    # SIGKILL: no shutdown hook runs, and the supervisor is not synced again, so nobody restarts it.
    os.killpg(worker.pid, signal.SIGKILL)
    worker.proc.wait(timeout=10)
    wait_for(lambda: not resting.admin.open_orders(key.api_key), "the exchange to cancel", timeout=CANCEL_DEADLINE_S)
    assert fired(resting, key) >= 1
    orders = {int(o["orderId"]): o["status"] for o in resting.admin.orders(key.api_key)}
    assert all(orders[i] == "CANCELED" for i in before)


@pytest.mark.django_db(transaction=True)
def test_a_deliberate_stop_disarms_the_countdown_and_the_orders_stay(
    fleet: Fleet, resting: Any, account: Callable[[str], tuple[ExchangeAccount, Key]]
) -> None:
    bot, key, worker = start_trading(fleet, resting, account, "deadman-stop")

    Bot.objects.filter(pk=bot.pk).update(desired_state="stopped")
    wait_for(lambda: bot.pk not in fleet.workers, "the worker to stop", timeout=30, fleet=fleet)
    assert worker.proc.returncode is not None
    left = open_ids(resting, key)
    assert len(left) >= 5

    time.sleep(WELL_PAST_S)
    assert open_ids(resting, key) == left
    assert fired(resting, key) == 0 and not armed(resting, key)
    assert reported(bot)["state"] == "disarmed"


@pytest.mark.django_db(transaction=True)
def test_a_worker_ending_while_its_bot_is_wanted_running_leaves_the_countdown_armed(
    fleet: Fleet, resting: Any, account: Callable[[str], tuple[ExchangeAccount, Key]]
) -> None:
    """The supervisor shutting down (console stopped): nobody watches the orders, so the exchange cancels them."""
    bot, key, _worker = start_trading(fleet, resting, account, "deadman-shutdown")
    fleet.shutdown()  # SIGTERM: the worker's shutdown hook runs, the bot stays desired-running
    assert Bot.objects.get(pk=bot.pk).desired_state == "running"
    wait_for(lambda: not resting.admin.open_orders(key.api_key), "the exchange to cancel", timeout=CANCEL_DEADLINE_S)
    assert fired(resting, key) >= 1


# -- failures, alerts, capability ----------------------------------------------------------


@pytest.mark.django_db
def test_refresh_failures_are_retried_alerted_once_and_the_recovery_reported(
    sandbox: Any,
    sandbox_url: str,
    account: Callable[[str], tuple[ExchangeAccount, Key]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    acct, key = account("Deadman failing")
    bot = make_bot(acct, "deadman-failing", desired="stopped")
    switch = deadman.DeadmanSwitch(
        bot_id=bot.pk,
        bot_name=bot.name,
        exchange_id="sandbox",
        symbols=lambda: ["BTC/USDT"],
        exchange=key.exchange(),
        refresh_s=REFRESH_S,
        timeout_s=TIMEOUT_S,
    )
    assert switch.refresh() and reported(bot)["state"] == "armed"

    # A real failure: the exchange now refuses the key's trading calls.
    sandbox.admin.set_permissions(key.api_key, can_trade=False)
    needed = deadman.alert_after(refresh_s=REFRESH_S, timeout_s=TIMEOUT_S)
    assert needed == 2
    with caplog.at_level(logging.INFO, logger="apps.trading.deadman"):
        for _ in range(needed + 1):
            assert not switch.refresh()
    state = reported(bot)
    # ccxt reads Binance's -2015 after a successful login as a temporary ban: ExchangeUnavailable.
    assert state["state"] == "failing" and state["failures"] == needed + 1 and state["error"] == "ExchangeUnavailable"
    (alert,) = Alert.objects.filter(kind="deadman_failing")  # once per streak
    assert alert.severity == "critical" and "could not be refreshed 2 times" in alert.message
    assert AuditEntry.objects.filter(action="alert.deadman_failing", actor=f"system:bot-{bot.pk}").exists()
    assert "refresh failed (ExchangeUnavailable, 3 in a row)" in caplog.text

    sandbox.admin.set_permissions(key.api_key, can_trade=True)
    assert switch.refresh()
    assert reported(bot)["state"] == "armed" and switch.failures == 0
    assert Alert.objects.filter(kind="deadman_recovered").count() == 1

    # Error kinds only: nothing the exchange was sent or answered, and never the key.
    for text in (caplog.text, redis_dump(), *Alert.objects.values_list("message", flat=True)):
        assert key.secret not in text and key.api_key not in text and "signature" not in text
    switch.exchange.deadman_disarm(symbols=["BTC/USDT"])


@pytest.mark.django_db
def test_an_exchange_without_the_switch_is_logged_once_and_shown_as_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    acct = ExchangeAccount.objects.create(
        label="No switch", exchange_id="binance", key_fingerprint="abcd", key_digest="0" * 64, withdrawals="disabled"
    )
    bot = make_bot(acct, "deadman-none", desired="stopped")
    rt = runtime.Runtime(bot_id=bot.pk, exchange=port.Exchange(exchange_id="binance"))
    with caplog.at_level(logging.WARNING, logger="apps.trading.runtime"):
        assert runtime._start_deadman(rt) is None
    assert [r.getMessage() for r in caplog.records if "dead-man" in r.getMessage()] == [
        f"bot {bot.pk}: binance offers no dead-man's switch (cancelAllOrdersAfter): "
        "if the console dies, its open orders stay on the exchange"
    ]
    assert reported(bot)["state"] == "unavailable"


@pytest.mark.django_db
def test_a_paper_bot_has_no_switch(account: Callable[[str], tuple[ExchangeAccount, Key]], sandbox_url: str) -> None:
    acct, _ = account("Deadman paper")
    bot = make_bot(acct, "deadman-paper", mode="paper", desired="stopped")
    rt = runtime.Runtime(
        bot_id=bot.pk,
        exchange=port.Exchange(exchange_id="binance"),
        deadman_exchange=port.Exchange(exchange_id="binance"),
    )
    assert runtime._start_deadman(rt) is None
    assert deadman.deadman_state(bot.pk) is None


def test_settings_refuse_a_timeout_not_greater_than_the_refresh(services: Harness, tmp_path: Path) -> None:
    env = process_env(services, token="", var_dir=tmp_path, DEADMAN_TIMEOUT_S="15", DEADMAN_REFRESH_S="15")
    proc = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), "check"],
        env=env,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "DEADMAN_TIMEOUT_S (15) must be greater than DEADMAN_REFRESH_S (15)" in proc.stderr


# -- the bot page ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_bot_page_shows_whether_the_switch_is_armed_and_its_last_refresh(
    logged_in: Callable[[str], tuple[Client, Person]],
    account: Callable[[str], tuple[ExchangeAccount, Key]],
) -> None:
    acct, _ = account("Deadman page")
    bot = make_bot(acct, "deadman-page", desired="stopped")
    viewer, _ = logged_in("viewer")
    url = f"/bots/{bot.pk}/"

    def page() -> str:
        response = viewer.get(url)
        assert response.status_code == 200
        return response.content.decode()

    assert 'data-deadman="none"' in page()
    now = time.time()
    common = {"exchange": "sandbox", "symbols": ["BTC/USDT"], "refresh_s": 15.0, "timeout_s": 60.0, "failures": 0}
    deadman.report_state(bot.pk, state="armed", last_refresh=now - 4, **common)
    text = page()
    assert 'data-deadman="armed"' in text and "Armed: sandbox cancels the open orders" in text
    assert f"Last refresh {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(now - 4))} UTC (" in text

    deadman.report_state(bot.pk, state="failing", last_refresh=now - 30, **{**common, "failures": 2}, error="Timeout")
    assert "Refresh failing (2 in a row: Timeout); armed until" in page()

    deadman.report_state(bot.pk, state="armed", last_refresh=now - 120, **common)
    assert 'data-deadman="lapsed"' in page() and "has cancelled the open orders" in page()

    deadman.report_state(bot.pk, state="disarmed", **common)
    assert 'data-deadman="disarmed"' in page()

    Bot.objects.filter(pk=bot.pk).update(mode="paper")
    assert 'data-deadman="paper"' in page()
    redis.Redis.from_url(settings.REDIS_URL).delete(deadman.state_key(bot.pk))
