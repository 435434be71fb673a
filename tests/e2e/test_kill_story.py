"""The whole story in a real browser, with every process as in production.

An admin logs in with a password and an authenticator code, configures a grid bot in the form,
switches it to live (a fresh code), starts it; the fleet supervisor gives it a worker with its own
Vault identity; its orders rest on the sandbox exchange and a fill appears live on the dashboard.
Then the panic button on the dashboard's kill card: the control worker cancels everything and the report
page fills in live to its final figures without a reload; the exchange holds no open order, the bot's
worker is gone, and every step is in the audit log. Last, the resume restarts the bot the kill stopped,
and its orders rest on the exchange again.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.exchanges.services import exchange_account_create
from apps.killswitch.models import KillRun
from apps.killswitch.report import result_line
from apps.trading.models import Fill, Order
from launcher.embedded import free_port, stop_process_group
from tests.e2e.conftest import browser_login, shots_dir
from tests.e2e.test_live import AsgiServer
from tests.fleet_support import ControlWorker, alive, wait_until
from tests.harness import Harness
from tests.keys import Key
from tests.people import make_person
from tests.processes import process_env

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "BTC/USDT"
SHOTS = shots_dir("kill-report")


@pytest.fixture
def console(services: Harness, sandbox_url: str, tmp_path: Path, settings: Any) -> Iterator[AsgiServer]:
    """The web server, the control worker and the fleet supervisor, each with its own Vault token."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]

    def env(process: str) -> dict[str, str]:
        return process_env(
            services, token=services.tokens[process].token, var_dir=tmp_path, sandbox_url=sandbox_url, DEBUG="true"
        )

    control = ControlWorker(services, tmp_path / "control", sandbox_url)
    server = AsgiServer(env("web"), free_port())
    with (tmp_path / "fleet.log").open("wb") as log:
        fleet = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runfleet"],
            cwd=ROOT,
            env=env("fleet"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        server.start()
        control.wait_ready()
        yield server
    finally:
        server.stop()
        stop_process_group(fleet, signal.SIGTERM, timeout=30)  # it stops the bot workers it started
        control.stop()


@pytest.mark.django_db(transaction=True)
def test_log_in_configure_start_see_a_fill_press_the_panic_button_read_the_report_and_the_audit_log(
    console: AsgiServer, page: Page, new_key: Callable[..., Key], sandbox: Any
) -> None:
    base = console.url
    key = new_key(ip_restrict=True)
    sandbox.admin.set_balances(key.api_key, {"USDT": "100000", "BTC": "1"})
    exchange_account_create(
        label="Story account",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    sandbox.admin.set_price(SYMBOL, "30000", hold=True)
    try:
        _story(page, base, key, sandbox)
    finally:
        sandbox.admin.release_price(SYMBOL)


def _story(page: Page, base: str, key: Key, sandbox: Any) -> None:
    who = make_person("ada", "admin")

    # 1. Log in: password, then the authenticator code.
    browser_login(page, base, "ada", who.code())
    expect(page.locator("h1")).to_have_text("Dashboard")

    # 2. Configure a grid bot in the form.
    page.get_by_role("link", name="Bots", exact=True).click()
    page.get_by_role("link", name="New bot").click()
    expect(page.locator("legend", has_text="Grid parameters")).to_be_visible()  # the first strategy
    fields = {
        "name": "Story grid",
        "symbols": SYMBOL,
        "tick_interval_s": "1",
        "max_order_notional": "1000",
        "max_position_notional": "10000",
        "daily_loss_limit": "5000",
        "max_drawdown_pct": "50",
        "grid-lower": "25000",
        "grid-upper": "35000",
        "grid-levels": "10",
        "grid-order_amount": "0.01",
    }
    for name, value in fields.items():
        page.locator(f"input[name={name}]").fill(value)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("h1")).to_have_text("Story grid")
    bot = Bot.objects.get(name="Story grid")
    assert (bot.mode, bot.desired_state) == ("paper", "stopped")  # a new bot is always paper and stopped

    # 3. Live mode asks for a fresh code; then start it.
    page.get_by_role("button", name="Switch to live").click()
    page.locator("input[name=code]").fill(who.code(1))
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("button", name="Switch to live").click()  # submitted again after the step-up
    expect(page.locator(".facts")).to_contain_text("Live")
    page.get_by_role("button", name="Start").click()
    expect(page.locator(".facts [data-field=state]")).to_have_text(re.compile("Starting|Running"))

    # The fleet starts its worker; the grid's buys rest on the exchange.
    wait_until(lambda: len(sandbox.admin.open_orders(key.api_key)) >= 3, "the grid's resting orders")
    worker_pid = wait_until(lambda: _worker_pid(bot.pk), "the bot's worker process")
    # A paper twin runs beside it: its buys rest in the simulator, never on the exchange.
    twin = Bot.objects.create(
        **{f: getattr(bot, f) for f in ("account", "strategy", "params", "symbols", "tick_interval_s")},
        name="Story paper",
        mode=Bot.Mode.PAPER,
        max_order_notional=bot.max_order_notional,
        max_position_notional=bot.max_position_notional,
        daily_loss_limit=bot.daily_loss_limit,
        max_drawdown_pct=bot.max_drawdown_pct,
        desired_state=Bot.Desired.RUNNING,
    )
    paper_open = Order.objects.filter(bot=twin, paper=True, status__in=Order.OPEN_STATUSES)
    wait_until(lambda: paper_open.count() >= 3, "the paper twin's resting simulated orders")
    twin_pid = wait_until(lambda: _worker_pid(twin.pk), "the paper twin's worker process")

    # 4. A fill, live on the dashboard without a reload.
    page.get_by_role("link", name="Dashboard", exact=True).click()
    expect(page.locator("#live-status")).to_have_text("Live", timeout=20_000)
    sandbox.admin.set_price(SYMBOL, "28500", hold=True)  # crosses the highest buy level (29000)
    expect(page.locator("#feed li.fill").first).to_contain_text("Fill: bought", timeout=60_000)
    # The first fill shown may be the paper twin's (same grid); the live bot's follows from its own tick.
    wait_until(lambda: Fill.objects.filter(order__bot=bot).exists(), "the live bot's fill", timeout=60)

    # 5. The panic button, on the dashboard's kill card (the same POST as the header's).
    expect(page.locator("#halt-state")).to_have_text("Trading is allowed: no halt is in place.")
    page.locator("#dash-kill-reason").fill("story: suspected key leak")
    page.get_by_role("button", name="Kill switch: halt everything now").click()
    expect(page.locator("h1")).to_have_text("Kill report")
    # The page opened while the control worker was still at work (it waits for the worker to stop) ...
    assert page.locator("#run-status").inner_text() in ("Pending", "Running")
    # ... and reaches the run's true final state in place, without a reload.
    expect(page.locator("#run-status")).to_have_text("Done", timeout=60_000)
    run = KillRun.objects.get()
    assert run.status == KillRun.Status.DONE, run.problems
    assert run.orders_cancelled >= 3 and run.orders_still_open == 0
    assert run.duration_ms is not None and run.workers_stopped_ms is not None
    # Both counted: the live bot's orders on the exchange and the paper twin's in the simulator.
    assert run.paper_orders_cancelled >= 3 and run.orders_cancelled - run.paper_orders_cancelled >= 3
    expect(page.locator("#run-cancelled")).to_have_text(f"{run.orders_cancelled} ({run.paper_orders_cancelled} paper)")
    expect(page.locator("#run-open")).to_have_text("0")
    expect(page.locator("#run-duration")).to_have_text(f"{run.duration_ms} ms (from the click to verified)")
    expect(page.locator("#run-workers")).to_have_text(f"2 workers, {run.workers_stopped_ms} ms after the click")
    expect(page.locator("#run-result")).to_have_text(f"Kill switch {result_line(run)}")
    expect(page.locator("#feed")).to_contain_text(f"Kill switch {result_line(run)}")
    expect(page.locator("#run-steps")).to_contain_text("Check that no order is left open")
    expect(page.locator("#run-balances")).to_contain_text("Story account")
    assert page.evaluate("performance.getEntriesByType('navigation')[0].type") == "navigate"  # never reloaded
    assert result_line(run).startswith("done in ") and ", 0 open, 2 workers stopped" in result_line(run)
    # Cancelled by the kill itself: written on our rows, not left for a later sync; none open anywhere.
    assert not Order.objects.filter(status__in=Order.OPEN_STATUSES).exists()
    assert sandbox.admin.open_orders(key.api_key) == []
    shots(page, "report")
    wait_until(lambda: not alive(worker_pid) and not alive(twin_pid), "the bots' workers to be gone", timeout=30)
    page.get_by_role("link", name="Dashboard", exact=True).click()
    expect(page.locator("#halt-state")).to_contain_text("Trading is halted for every bot")
    expect(page.locator(".kill-card")).to_contain_text("restart the 2 bots the kill stopped")
    shots(page, "dashboard", clip=".kill-card")

    # 6. All of it is in the audit log: filter by action, as a reviewer would.
    page.get_by_role("link", name="Audit log", exact=True).click()
    page.locator("input[name=action]").fill("killswitch.*")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("main table tbody")
    expect(rows).to_contain_text("killswitch.pressed")
    expect(rows).to_contain_text("killswitch.finished")
    expect(rows).to_contain_text("story: suspected key leak")
    for action in (
        "login.success",
        "bot.created",
        "bot.mode_changed",
        "bot.start_requested",
        "bot.worker_started",
        "bot.worker_stopped",
    ):
        page.locator("input[name=action]").fill(action)
        page.get_by_role("button", name="Filter").click()
        expect(rows).to_contain_text(action)

    # 7. Resume, restarting the live bot the kill stopped and not its paper twin (unchecked): the grid runs
    # again and its orders rest on the exchange again; the twin stays stopped.
    page.goto(f"{base}/killswitch/resume/")
    if "/accounts/step-up/" in page.url:
        page.locator("input[name=code]").fill(who.code(1))
        page.get_by_role("button", name="Confirm").click()
    expect(page.locator("legend")).to_have_text("Restart the 2 bots that were running")
    restart = page.get_by_role("checkbox", name=re.compile("Story grid"))
    keep_stopped = page.get_by_role("checkbox", name=re.compile("Story paper"))
    expect(restart).to_be_checked()
    expect(keep_stopped).to_be_checked()  # every one checked by default
    keep_stopped.uncheck()
    shots(page, "resume")
    page.locator("#id_reason").fill("story: key rotated")
    page.get_by_role("button", name="Resume trading").click()
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(page.locator(".messages")).to_contain_text("Started again: Story grid.")
    bot.refresh_from_db()
    twin.refresh_from_db()
    assert (bot.desired_state, twin.desired_state) == (Bot.Desired.RUNNING, Bot.Desired.STOPPED)
    wait_until(lambda: len(sandbox.admin.open_orders(key.api_key)) >= 3, "the restarted grid's resting orders")
    assert AuditEntry.objects.filter(action="bot.start_requested", target_id=str(bot.pk)).count() == 2
    assert not AuditEntry.objects.filter(action="bot.start_requested", target_id=str(twin.pk)).exists()
    assert _worker_pid(twin.pk) is None and not paper_open.exists()


def shots(page: Page, name: str, clip: str | None = None) -> None:
    """Desktop (1280 wide) and phone (390 wide) screenshots, for a person to look at (not in git)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, width in (("desktop", 1280), ("phone", 390)):
        page.set_viewport_size({"width": width, "height": 900})
        path = str(SHOTS / f"{name}-{label}.png")
        if clip:
            page.locator(clip).screenshot(path=path)
        else:
            page.screenshot(path=path, full_page=True)
    page.set_viewport_size({"width": 1280, "height": 720})


def _worker_pid(bot_id: int) -> int | None:
    import psutil

    # Another test process (make test runs two) may run a bot of the same id on its own servers: ours only.
    ours = os.environ["VAULT_ADDR"]
    for proc in psutil.process_iter(["cmdline", "environ"]):
        cmdline = proc.info.get("cmdline") or []
        environ = proc.info.get("environ") or {}
        if f"bot.{bot_id}" in cmdline and "worker" in cmdline and environ.get("VAULT_ADDR") == ours:
            return int(proc.pid)
    return None
