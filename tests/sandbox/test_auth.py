"""Binance-style authentication and permissions, and how ccxt maps the sandbox's refusals."""

from __future__ import annotations

import ccxt
import pytest

from tests.fixtures.sandbox import SandboxProcess
from tests.sandbox.conftest import make_binance

SYMBOL = "BTC/USDT"


def test_it_refuses_a_bad_signature(sandbox: SandboxProcess, sandbox_key: tuple[str, str]) -> None:
    api_key, _ = sandbox_key
    exchange = make_binance(sandbox, api_key, "not-the-secret")
    with pytest.raises(ccxt.AuthenticationError) as caught:
        exchange.fetch_balance()
    assert '"code":-1022' in str(caught.value)


def test_it_refuses_an_old_timestamp(sandbox: SandboxProcess, sandbox_key: tuple[str, str]) -> None:
    exchange = make_binance(sandbox, *sandbox_key)
    exchange.options["timeDifference"] = 120_000  # ccxt signs timestamps two minutes in the past
    with pytest.raises(ccxt.InvalidNonce) as caught:
        exchange.fetch_balance()
    assert '"code":-1021' in str(caught.value)


def test_it_refuses_a_timestamp_from_the_future(sandbox: SandboxProcess, sandbox_key: tuple[str, str]) -> None:
    exchange = make_binance(sandbox, *sandbox_key)
    exchange.options["timeDifference"] = -5_000
    with pytest.raises(ccxt.InvalidNonce, match="ahead of the server"):
        exchange.fetch_balance()


def test_it_refuses_an_unknown_key(sandbox: SandboxProcess) -> None:
    exchange = make_binance(sandbox, "A" * 64, "whatever")
    with pytest.raises(ccxt.AuthenticationError) as caught:
        exchange.fetch_balance()
    assert '"code":-2015' in str(caught.value)


def test_it_refuses_a_malformed_key(sandbox: SandboxProcess) -> None:
    exchange = make_binance(sandbox, "not a binance key", "whatever")
    with pytest.raises(ccxt.AuthenticationError) as caught:
        exchange.fetch_balance()
    assert '"code":-2014' in str(caught.value)


def test_it_refuses_a_restricted_key_from_another_ip(sandbox: SandboxProcess) -> None:
    elsewhere = sandbox.new_key(ip_restrict=True, allowed_ips=["192.0.2.10"])
    with pytest.raises(ccxt.AuthenticationError) as caught:
        make_binance(sandbox, elsewhere.api_key, elsewhere.secret).fetch_balance()
    assert '"code":-2015' in str(caught.value)

    here = sandbox.new_key(ip_restrict=True)  # restricted to loopback by default
    assert make_binance(sandbox, here.api_key, here.secret).fetch_balance()["USDT"]["free"] == 10000


def test_api_restrictions_report_each_permission(sandbox: SandboxProcess, sandbox_key: tuple[str, str]) -> None:
    withdrawing = sandbox.new_key(can_withdraw=True)
    restrictions = make_binance(sandbox, withdrawing.api_key, withdrawing.secret).sapi_get_account_apirestrictions()
    assert restrictions["enableWithdrawals"] is True
    assert restrictions["enableReading"] is True and restrictions["enableSpotAndMarginTrading"] is True
    assert restrictions["ipRestrict"] is False and restrictions["createTime"] > 0

    trade_only = make_binance(sandbox, *sandbox_key).sapi_get_account_apirestrictions()
    assert trade_only["enableWithdrawals"] is False and trade_only["enableSpotAndMarginTrading"] is True

    read_only = sandbox.new_key(can_trade=False)
    restrictions = make_binance(sandbox, read_only.api_key, read_only.secret).sapi_get_account_apirestrictions()
    assert restrictions["enableSpotAndMarginTrading"] is False and restrictions["enableWithdrawals"] is False


def test_a_key_without_trade_permission_cannot_place_an_order(sandbox: SandboxProcess) -> None:
    read_only = sandbox.new_key(can_trade=False)
    exchange = make_binance(sandbox, read_only.api_key, read_only.secret)
    exchange.load_markets()
    with pytest.raises(ccxt.AuthenticationError) as caught:
        exchange.create_order(SYMBOL, "market", "buy", 0.001)
    assert '"code":-2015' in str(caught.value)

    count = sandbox.admin.order_count()
    assert count.for_key(read_only.api_key) == 1  # received ...
    assert count.accepted_by_key.get(read_only.api_key, 0) == 0  # ... and refused
    assert sandbox.admin.orders(read_only.api_key) == []
    assert exchange.fetch_balance()["BTC"]["total"] == 1  # reading still works


def test_ccxt_calls_a_missing_trade_permission_ddos_once_the_key_has_worked(sandbox: SandboxProcess) -> None:
    """A ccxt quirk callers must know: after one successful private call, ccxt turns -2015 into
    DDoSProtection (a retryable NetworkError), because Binance also answers -2015 on a temporary ban."""
    read_only = sandbox.new_key(can_trade=False)
    exchange = make_binance(sandbox, read_only.api_key, read_only.secret)
    exchange.fetch_balance()
    with pytest.raises(ccxt.DDoSProtection) as caught:
        exchange.create_order(SYMBOL, "market", "buy", 0.001)
    assert '"code":-2015' in str(caught.value)


def test_a_key_without_read_permission_cannot_read_the_account(sandbox: SandboxProcess) -> None:
    blind = sandbox.new_key(can_read=False)
    with pytest.raises(ccxt.AuthenticationError) as caught:
        make_binance(sandbox, blind.api_key, blind.secret).fetch_balance()
    assert '"code":-2015' in str(caught.value)


def test_it_never_logs_a_key_secret(sandbox: SandboxProcess, sandbox_key: tuple[str, str]) -> None:
    api_key, secret = sandbox_key
    exchange = make_binance(sandbox, api_key, secret)
    exchange.fetch_balance()
    exchange.create_order(SYMBOL, "market", "buy", 0.001)
    sandbox.admin.balances(api_key)
    log = sandbox.log_text()
    assert "/api/v3/order" in log  # the log is being written ...
    assert secret not in log  # ... and the secret is not in it
