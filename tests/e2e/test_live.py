"""Live updates in a real browser, served by uvicorn (websockets) as in production.

A fill on the sandbox appears on the dashboard without a reload; while the server is down the page
shows it is reconnecting, and events published meanwhile appear once it is back (fetched by cursor).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from playwright.sync_api import Page, expect

from apps.events.services import publish
from apps.strategies.base import OrderIntent
from apps.trading.gate import place_order
from apps.trading.sync import orders_sync
from launcher.embedded import free_port
from tests.e2e.conftest import browser_login, live_grid_bot
from tests.harness import Harness
from tests.keys import Key
from tests.people import make_person
from tests.processes import process_env

ROOT = Path(__file__).resolve().parents[2]


def as_worker(fn: Callable[[], Any]) -> None:
    """Run trading code in a plain thread, as a bot worker would: Playwright keeps an event loop in the
    test thread, and channels' async_to_sync (used to notify sockets) refuses to run inside one."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not errors, errors


class AsgiServer:
    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port = env, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}"
        # The server's own log (tracebacks of a 500 included), kept for whoever reads a failed test.
        fd, name = tempfile.mkstemp(prefix=f"botconsole-web-{port}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "botconsole.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--lifespan",
                "off",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/accounts/login/", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("uvicorn did not come up")

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
            self.proc = None


@pytest.fixture
def asgi_server(services: Harness, sandbox_url: str, tmp_path: Path, settings: Any) -> Iterator[AsgiServer]:
    # The server runs the production password hasher; store the test user's password with it too.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    env = process_env(
        services, token=services.tokens["web"].token, var_dir=tmp_path, sandbox_url=sandbox_url, DEBUG="true"
    )
    server = AsgiServer(env, free_port())
    server.start()
    yield server
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_a_fill_appears_live_and_events_missed_while_disconnected_arrive(
    asgi_server: AsgiServer, page: Page, new_key: Callable[..., Key], sandbox: Any
) -> None:
    bot, key = live_grid_bot(new_key, sandbox, label="Live test", name="Live bot")
    who = make_person("vera", "viewer")
    base = asgi_server.url
    browser_login(page, base, "vera", who.code())
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(page.locator("#live-status")).to_have_text("Live")
    page.evaluate("window.__sameDocument = 42")  # survives only if the page is never reloaded

    client = key.exchange()
    sandbox.admin.set_price("BTC/USDT", "30000")
    try:
        intent = OrderIntent("BTC/USDT", "buy", "limit", Decimal("0.01"), Decimal("29900"), "live-1")
        as_worker(lambda: place_order(bot=bot, intent=intent, exchange=client))
        expect(page.locator("#feed")).to_contain_text(re.compile(r"Buy 0\.01(000)? BTC/USDT at 29,900"))
        sandbox.admin.set_price("BTC/USDT", "29800")  # crosses the resting buy
        as_worker(lambda: orders_sync(bot=bot, exchange=client))
        expect(page.locator("#feed li.fill")).to_contain_text(
            re.compile(r"Fill: bought 0\.01(000)? BTC/USDT at 29,900")
        )
    finally:
        sandbox.admin.release_price("BTC/USDT")

    # Cut the socket: the server goes away, the page says so, events are published meanwhile.
    asgi_server.stop()
    expect(page.locator("#live-status")).to_contain_text("Reconnecting")
    as_worker(
        lambda: publish(
            kind="gate_refusal",
            bot_id=bot.pk,
            data={"symbol": "BTC/USDT", "side": "buy", "reason": "test", "message": "sent while you were away"},
        )
    )
    asgi_server.start()
    expect(page.locator("#live-status")).to_have_text("Live", timeout=20_000)
    expect(page.locator("#feed")).to_contain_text("sent while you were away")
    assert page.evaluate("window.__sameDocument") == 42  # all of it arrived without a reload
