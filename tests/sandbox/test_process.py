"""`manage.py runsandbox` as a process: where it listens, how it stops, what a reset restores."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import ccxt
import pytest

from apps.sandbox.state import new_key_material
from tests.fixtures.sandbox import ROOT, SandboxProcess, sandbox_env, start_sandbox
from tests.sandbox.conftest import make_binance

ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - the point of these tests


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(sock.getsockname()[0])
    return None if address.startswith("127.") else address


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


def test_the_admin_routes_refuse_a_non_loopback_peer(tmp_path: Path) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    running = start_sandbox(tmp_path / "remote.log", "--allow-remote", host=ALL_INTERFACES)
    try:
        port = running.url.rsplit(":", 1)[1]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{address}:{port}/_sandbox/health", timeout=5)
        assert refused.value.code == 403
        with urllib.request.urlopen(f"http://{address}:{port}/api/v3/ping", timeout=5) as ping:
            assert ping.status == 200  # the exchange API itself answers, as --allow-remote asked
        assert running.admin.health()["ok"] is True  # and loopback still administers it
    finally:
        running.stop()


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

        running.admin.reset()

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
