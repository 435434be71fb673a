"""Balance snapshots against the real sandbox and OpenBao, and the balance check built on them."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.exchanges import port
from apps.exchanges.models import ExchangeAuthFailure
from apps.exchanges.services import exchange_account_create
from apps.reviews.models import BalanceSnapshot
from apps.reviews.periods import day_period
from apps.reviews.selectors import review_build
from apps.reviews.services import balance_snapshots_take, transfer_record
from apps.reviews.tasks import balance_snapshot_task
from apps.strategies.base import OrderIntent
from apps.trading.gate import place_order
from apps.trading.models import Fill
from apps.trading.sync import orders_sync
from apps.vault import client as vault
from tests.harness import Harness
from tests.keys import Key
from tests.processes import process_env
from tests.trading.conftest import SYMBOL, Live

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def check_of(live: Live, period: Any = None) -> dict[str, Any]:
    data = review_build(period or day_period(timezone.now().date()))
    return next(c for c in data["balances"] if c["account_id"] == str(live.account.pk))


def snapshot(live: Live, control_vault: vault.ProcessVault) -> BalanceSnapshot:
    return next(
        s
        for s in balance_snapshots_take(source="schedule", process_vault=control_vault)
        if s.account_id == live.account.pk
    )


def trade(live: Live, bot: Bot, side: str, amount: str, price: str, cross: str, tag: str) -> Fill:
    """A limit order through the gate, filled on the sandbox by moving the price across it, then synced."""
    order = place_order(
        bot=bot, intent=OrderIntent(SYMBOL, side, "limit", Decimal(amount), Decimal(price), tag), exchange=live.exchange
    )
    live.sandbox.admin.set_price(SYMBOL, cross, hold=True)
    assert orders_sync(bot=bot, exchange=live.exchange).new_fills == 1
    return Fill.objects.get(order=order)


def test_the_control_worker_reads_balances_with_its_own_vault_token_and_stores_amounts_only(
    live: Live, control_vault: vault.ProcessVault
) -> None:
    taken = snapshot(live, control_vault)
    assert taken.ok and taken.error == ""
    assert taken.balances == {"BTC": "1", "USDT": "10000"}  # the sandbox's opening balances
    assert taken.transfers == [] and "no deposit or withdrawal history" in taken.transfers_note
    entry = AuditEntry.objects.get(action="review.balance_snapshot", target_id=str(live.account.pk))
    assert entry.actor == "system:control-worker" and entry.data["balances"] == taken.balances
    stored = json.dumps([list(BalanceSnapshot.objects.values()), entry.data], default=str)
    assert live.key.secret not in stored and live.key.api_key not in stored


def test_with_the_web_tier_token_the_snapshot_fails_and_says_so(live: Live) -> None:
    # The task as the beat runs it, with this process's Vault token: the web token (tests run as
    # the web tier), which Vault forbids to read any exchange secret.
    assert balance_snapshot_task.apply(kwargs={"source": "schedule"}).get() == 0
    failed = BalanceSnapshot.objects.get(account=live.account)
    assert not failed.ok and failed.balances == {} and "permission denied" in failed.error
    check = check_of(live)
    assert check["status"] == "no_snapshot" and check["failed_attempts"] == 1
    assert "permission denied" in check["last_failure"]["error"]


def test_a_revoked_key_is_a_failed_snapshot_and_counts_for_the_auth_breaker(
    live: Live, control_vault: vault.ProcessVault
) -> None:
    live.sandbox.admin.set_permissions(live.key.api_key, can_read=False)
    failed = snapshot(live, control_vault)
    assert not failed.ok and failed.balances == {}
    assert failed.error.startswith(("The exchange rejected the key", "The key lacks a permission"))
    assert ExchangeAuthFailure.objects.filter(account=live.account).count() == 1


def test_trades_explain_the_change_and_a_withdrawal_the_console_did_not_make_is_flagged(
    live: Live, make_bot: Callable[..., Bot], control_vault: vault.ProcessVault, new_key: Callable[..., Key]
) -> None:
    assert check_of(live)["status"] == "no_snapshot"
    opening = snapshot(live, control_vault)
    assert check_of(live)["status"] == "one_snapshot"

    bot = make_bot()
    bought = trade(live, bot, "buy", "0.01", "59000", "58900", "bal-b")  # fee in BTC
    sold = trade(live, bot, "sell", "0.004", "61000", "61100", "bal-s")  # fee in USDT
    second = snapshot(live, control_vault)
    check = check_of(live)
    assert check["status"] == "ok" and check["fills"] == 2 and check["unexplained"] == []
    assert (check["opening"]["id"], check["closing"]["id"]) == (opening.pk, second.pk)
    btc = next(a for a in check["assets"] if a["asset"] == "BTC")
    expected_btc = Decimal(1) + Decimal("0.01") - bought.fee - Decimal("0.004")
    assert Decimal(btc["expected"]) == expected_btc == Decimal(btc["actual"]) and btc["explained"]
    usdt = next(a for a in check["assets"] if a["asset"] == "USDT")
    assert Decimal(usdt["trades"]) == Decimal(-590) + Decimal(244) - sold.fee
    assert review_build(day_period(timezone.now().date()))["fund_movements"] == []

    # Someone takes 2500 USDT out of the account (the console never withdraws): the next snapshot
    # no longer adds up, by exactly that amount.
    usdt_now = live.sandbox.admin.balances(live.key.api_key)["USDT"].free
    live.sandbox.admin.set_balances(live.key.api_key, {"USDT": usdt_now - 2500})
    snapshot(live, control_vault)
    data = review_build(day_period(timezone.now().date()))
    check = next(c for c in data["balances"] if c["account_id"] == str(live.account.pk))
    assert check["status"] == "mismatch"
    assert check["unexplained"] == [{"asset": "USDT", "amount": "-2500"}]
    [movement] = [m for m in data["fund_movements"] if m["account"] == live.account.label]
    assert (movement["asset"], movement["amount"], movement["direction"], movement["source"]) == (
        "USDT",
        "-2500",
        "out",
        "balance check",
    )

    # Another account on the same console is unaffected, and one never snapshotted says so.
    key = new_key()
    other, _ = exchange_account_create(
        label=f"other-{key.api_key[-6:]}",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    data = review_build(day_period(timezone.now().date()))
    assert next(c for c in data["balances"] if c["account_id"] == str(other.pk))["status"] == "no_snapshot"


def test_a_day_compares_the_snapshot_before_it_with_the_one_after_it(
    live: Live, control_vault: vault.ProcessVault
) -> None:
    before, inside, after = (snapshot(live, control_vault) for _ in range(3))
    day = dt.date(2026, 1, 5)
    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    times = [start - dt.timedelta(hours=1), start + dt.timedelta(hours=12), start + dt.timedelta(days=1, minutes=5)]
    for snap, at in zip((before, inside, after), times, strict=True):
        BalanceSnapshot.objects.filter(pk=snap.pk).update(taken_at=at)
    BalanceSnapshot.objects.filter(pk=inside.pk).update(balances={"BTC": "1", "USDT": "1"})
    check = check_of(live, day_period(day))  # the one inside the day is not what it compares
    assert (check["opening"]["id"], check["closing"]["id"], check["status"]) == (before.pk, after.pk, "ok")
    # The next day starts from the last snapshot before it (the one inside the 5th) ...
    following = check_of(live, day_period(day + dt.timedelta(days=1)))
    assert (following["opening"]["id"], following["closing"]["id"]) == (inside.pk, after.pk)
    assert following["unexplained"] == [{"asset": "USDT", "amount": "9999"}]
    # ... and the day after that has a snapshot before it and none since: nothing to compare yet.
    assert check_of(live, day_period(day + dt.timedelta(days=2)))["status"] == "one_snapshot"


def test_exchange_transfers_keep_what_moved_and_when_but_no_address() -> None:
    raw = {
        "id": "d-1",
        "txid": "0xabc",
        "currency": "USDT",
        "amount": 250.5,
        "status": "ok",
        "timestamp": 1767225600000,
        "address": "TXyz",
        "tag": "memo-1",
    }
    transfer = port.Transfer.from_ccxt("deposit", raw)
    assert "TXyz" not in repr(transfer) and "memo-1" not in repr(transfer)
    assert transfer_record(transfer) == {
        "type": "deposit",
        "id": "d-1",
        "currency": "USDT",
        "amount": "250.5",
        "status": "ok",
        "at": "2026-01-01T00:00:00+00:00",
    }


def test_the_beat_task_with_the_control_workers_token_snapshots_every_account(
    live: Live, services: Harness, settings: Any
) -> None:
    settings.VAULT_TOKEN = services.tokens["control"].token  # what the control worker runs with
    assert balance_snapshot_task.apply(kwargs={"source": "schedule"}).get() == 1
    taken = BalanceSnapshot.objects.get(account=live.account)
    assert taken.ok and taken.source == "schedule" and taken.balances == {"BTC": "1", "USDT": "10000"}


@pytest.mark.django_db(transaction=True)
def test_the_shell_command_takes_snapshots_with_the_control_token(
    live: Live, services: Harness, sandbox_url: str, tmp_path: Path
) -> None:
    env = process_env(services, token=services.tokens["control"].token, var_dir=tmp_path, sandbox_url=sandbox_url)
    done = subprocess.run(
        [sys.executable, "manage.py", "review_balances"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{live.account.label}: BTC 1, USDT 10000" in done.stdout and "1 of 1 account(s) read." in done.stdout
    taken = BalanceSnapshot.objects.get(account=live.account)
    assert taken.ok and taken.source == "shell"
    assert AuditEntry.objects.get(action="review.balance_snapshot").actor == "system:shell"
    assert live.key.secret not in done.stdout + done.stderr
