"""`manage.py runsandbox` as a process: where it listens, how it stops, what a reset restores."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import ccxt
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from apps.sandbox.admin_routes import admin_guard, is_loopback
from apps.sandbox.state import new_key_material
from tests.fixtures.sandbox import ROOT, SandboxProcess, sandbox_env, start_sandbox
from tests.sandbox.conftest import make_binance

ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - the point of these tests


def test_it_refuses_a_key_that_is_not_binance_shaped() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "runsandbox", "--port", "9"],
        cwd=ROOT,
        env={**sandbox_env(), "SANDBOX_API_KEY": "demo1234", "SANDBOX_API_SECRET": "s"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "must be 64 ASCII letters and digits" in result.stderr


def test_it_refuses_a_non_loopback_host_without_allow_remote() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "runsandbox", "--host", ALL_INTERFACES, "--port", "9"],
        cwd=ROOT,
        env=sandbox_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0" in result.stderr and "no real security" in result.stderr


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("127.8.9.1", True),
        ("10.1.2.3", False),
        ("192.0.2.7", False),
        ("2001:db8::1", False),
        ("", False),
        (None, False),
        ("not-an-ip", False),
    ],
)
def test_the_admin_routes_answer_loopback_peers_only(peer: str | None, allowed: bool) -> None:
    assert is_loopback(peer) is allowed


def test_the_admin_guard_refuses_a_remote_peer() -> None:
    # A real remote connection cannot be made from here (tests may only talk to loopback), so the
    # request carries a remote peer address the way aiohttp's transport would report it.
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        ("10.1.2.3", 40000) if name == "peername" else default
    )
    request = make_mocked_request("GET", "/_sandbox/health", transport=transport)

    async def handler(_: Any) -> web.StreamResponse:
        raise AssertionError("the handler must not run for a remote peer")

    response = asyncio.run(admin_guard(request, handler))
    assert response.status == 403


def test_it_starts_while_the_database_and_vault_are_unreachable(tmp_path: Path) -> None:
    dead = {
        "DATABASE_URL": "postgres://nobody:nothing@127.0.0.1:9/none",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "VAULT_ADDR": "http://127.0.0.1:9",
    }
    running = start_sandbox(tmp_path / "no-servers.log", env=dead)
    try:
        assert make_binance(running).fetch_ticker("ETH/BTC")["last"] > 0
    finally:
        assert running.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_it_stops_cleanly_on_a_signal_closing_its_websockets(tmp_path: Path, sig: signal.Signals) -> None:
    running = start_sandbox(tmp_path / "stop.log")

    async def scenario() -> aiohttp.WSMessage:
        url = running.url.replace("http://", "ws://") + "/ws/btcusdt@trade"
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            await asyncio.wait_for(ws.receive(), 10)  # streaming
            running.proc.send_signal(sig)
            while True:
                message = await asyncio.wait_for(ws.receive(), 10)
                if message.type != aiohttp.WSMsgType.TEXT:
                    return message

    try:
        closing = asyncio.run(scenario())
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.GOING_AWAY
        assert running.proc.wait(timeout=10) == 0
        assert "stopping" in running.log_text() and "Traceback" not in running.log_text()
    finally:
        running.stop(signal.SIGKILL)


@pytest.mark.parametrize("delivery", ["argv", "env"])
def test_a_reset_keeps_only_the_command_line_key_with_fresh_balances(tmp_path: Path, delivery: str) -> None:
    api_key, secret = new_key_material(), new_key_material()
    if delivery == "argv":
        running: SandboxProcess = start_sandbox(tmp_path / "reset.log", "--api-key", api_key, "--api-secret", secret)
    else:
        running = start_sandbox(tmp_path / "reset.log", env={"SANDBOX_API_KEY": api_key, "SANDBOX_API_SECRET": secret})
    try:
        assert secret not in running.log_text() and api_key not in running.log_text()
        exchange = make_binance(running, api_key, secret)
        assert exchange.fetch_balance()["USDT"]["total"] == 10000
        exchange.create_order("BTC/USDT", "market", "buy", 0.01)
        extra = running.new_key()
        running.admin.set_rate_limit(5)
        assert running.admin.order_count().total == 1
        restrictions = exchange.sapi_get_account_apirestrictions()
        assert (restrictions["enableSpotAndMarginTrading"], restrictions["enableWithdrawals"]) == (True, False)
        running.admin.set_clock_offset(-5000)
        running.admin.fail_requests(502, count=5)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            exchange.fetch_balance()

        running.admin.reset()
        faults = running.admin.faults()
        assert (faults.active, faults.counts, faults.log) == ({}, {}, [])  # every fault off, the counts gone

        balance = make_binance(running, api_key, secret).fetch_balance()
        assert (balance["USDT"]["total"], balance["BTC"]["total"]) == (10000, 1)
        assert running.admin.orders(api_key) == [] and running.admin.order_count().total == 0
        with pytest.raises(ccxt.AuthenticationError):
            make_binance(running, extra.api_key, extra.secret).fetch_balance()
        for _ in range(6):  # the default rate limit is back to its start value
            make_binance(running).fetch_time()
    finally:
        assert running.stop() == 0


def test_it_stops_when_its_parent_process_is_gone(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # The last --parent-pid wins over the one the fixture passes.
        running = start_sandbox(tmp_path / "orphan.log", "--parent-pid", str(parent.pid))
    finally:
        parent.kill()
        parent.wait()
    try:
        assert running.proc.wait(timeout=15) == 0
        assert f"parent process {parent.pid} is gone" in running.log_text()
    finally:
        running.stop(signal.SIGKILL)
