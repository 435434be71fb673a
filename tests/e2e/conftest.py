"""Browser tests: Playwright (sync API) driving Debian's Chromium against pytest-django's live_server.

The browser is /usr/bin/chromium (`make test` makes sure it is installed); `playwright install`
is never used. One browser runs for all of tests/e2e; every test gets a fresh context (its own
cookies and storage) and page. Every test collected under tests/e2e is marked `e2e`, so
`pytest -m e2e` runs only these and `pytest -m "not e2e"` skips them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from apps.bots.models import Bot
from apps.exchanges.services import exchange_account_create
from tests.keys import Key

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium keeps reaching out to Google services (updates, sync, safe
    # browsing lists ...), which on a closed network means a flood of failing connections.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEFAULT_TIMEOUT_MS = 15_000
E2E_DIR = Path(__file__).parent
# Screenshots for a person to look at: under the test run's own output folder (pytest's basetemp), not in git.
_config: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config


def _shots_root() -> Path | None:  # tests/conftest.py prints where they are at the end of the run
    factory = getattr(_config, "_tmp_path_factory", None)  # pytest's tmp_path plugin, configured by collection
    return None if factory is None else Path(factory.getbasetemp()) / "screens"


def shots_dir(kind: str) -> Path:
    """Where the browser tests of `kind` write their screenshots (created by whoever writes first)."""
    root = _shots_root()
    assert root is not None, "pytest's tmp_path plugin is not configured"
    return root / kind


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Keep each phase's report on the item, so the page fixture can tell whether the test failed.
    report = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    """Playwright for the browser tests; one Chromium serves every test in tests/e2e.

    Package-scoped rather than session-scoped: from start() to stop() Playwright's sync API
    keeps an asyncio event loop running in the test thread, and a loop left running would make
    Django refuse ORM calls (and async_to_sync / asyncio.run fail) in whatever tests run after
    these. Package scope stops it as soon as the last test in tests/e2e is done.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (`make test` does it as root)")
    with pytest.MonkeyPatch.context() as mp:
        # While that loop runs Django sees "an async context" and raises SynchronousOnlyOperation
        # for ORM calls from the test body and from pytest-django's fixtures, although the test
        # thread is really synchronous (nothing else runs on the loop while the ORM is used).
        # Set only here, and only while Playwright runs: set for the whole session it would leak
        # into the rest of the suite and into subprocesses (`check --deploy` fails on async.E001).
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as p:
            yield p


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Page]:
    """A page in a fresh browser context; on failure a full-page screenshot is saved under tmp_path."""
    context = browser.new_context()
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        reports = request.node.stash.get(PHASE_REPORTS, {})
        if any(r.failed for r in reports.values()):
            shot = tmp_path / "failure.png"
            try:
                page.screenshot(path=str(shot), full_page=True)
                print(f"\nscreenshot of the failing page ({page.url}): {shot}")
            except Exception as exc:  # a broken page must not hide the real failure
                print(f"\nno screenshot: {exc}")
        context.close()


def browser_login(page: Page, base: str, username: str, code: str, password: str | None = None) -> None:
    """Log in through the two login pages (password, then the authenticator code)."""
    from tests.people import PASSWORD

    page.goto(f"{base}/accounts/login/")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(password or PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    page.locator("input[name=code]").fill(code)
    page.get_by_role("button", name="Verify", exact=True).click()


def live_grid_bot(
    new_key: Callable[..., Key], sandbox: Any, *, label: str, name: str, **fields: Any
) -> tuple[Bot, Key]:
    """A started live grid bot on BTC/USDT on a new sandbox key holding 10,000 USDT (the gate refuses a stopped
    bot); `fields` add to or replace the bot's."""
    key = new_key(ip_restrict=True)
    sandbox.admin.set_balances(key.api_key, {"USDT": "10000", "BTC": "0"})
    account, _ = exchange_account_create(
        label=label, exchange_id="sandbox", credentials=key.form(), attested_no_withdrawals=False, actor="system:test"
    )
    values: dict[str, Any] = {
        "strategy": "grid",
        "symbols": ["BTC/USDT"],
        "mode": "live",
        "max_order_notional": Decimal("1000"),
        "max_position_notional": Decimal("5000"),
        "daily_loss_limit": Decimal("1000"),
        "max_drawdown_pct": Decimal("50"),
        "desired_state": "running",
        **fields,
    }
    return Bot.objects.create(name=name, account=account, **values), key
