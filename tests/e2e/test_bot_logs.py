"""The bot page's log in a real browser (uvicorn, websockets): a line the bot's worker logs appears at the top
without a reload, masked, and the level filter holds for the live tail too."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from apps.bots.models import Bot
from apps.exchanges.services import exchange_account_create
from apps.trading.logs import BotLogHandler
from apps.trading.models import BotLogLine
from tests.e2e.conftest import browser_login, shots_dir
from tests.e2e.test_live import AsgiServer, asgi_server  # noqa: F401 - asgi_server is a fixture
from tests.keys import Key
from tests.people import make_person

SHOTS = shots_dir("bot-logs")
CANARY = "CANARY-e2e-0a1b2c3d"


def shoot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, width, height in (("desktop", 1366, 900), ("phone", 390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.evaluate("document.querySelector('.botlog').scrollIntoView({block: 'start'})")
        page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=False)
    page.set_viewport_size({"width": 1366, "height": 900})


@pytest.fixture
def bot(new_key: Callable[..., Key]) -> Bot:
    key = new_key()
    account, _ = exchange_account_create(
        label="Bot log page",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    bot = Bot.objects.create(
        name="Grid with a log",
        account=account,
        strategy="grid",
        symbols=["BTC/USDT"],
        mode="paper",
        max_order_notional=Decimal("1000"),
        max_position_notional=Decimal("5000"),
        daily_loss_limit=Decimal("1000"),
        max_drawdown_pct=Decimal("50"),
    )
    now = timezone.now()
    BotLogLine.objects.bulk_create(
        [
            BotLogLine(
                bot=bot,
                level=logging.INFO,
                logger="apps.trading.runtime",
                message=f"bot {bot.pk}: worker ready (paper)",
                created_at=now - timedelta(seconds=30),
            ),
            BotLogLine(
                bot=bot,
                level=logging.WARNING,
                logger="apps.trading.tasks",
                message=f"bot {bot.pk}: tick failed (NetworkError)",
                created_at=now - timedelta(seconds=20),
            ),
        ]
    )
    return bot


@pytest.fixture
def worker_log(bot: Bot) -> Iterator[logging.Logger]:
    """A logger of the bot's code with the bot-log handler on it, its writer thread running (as in the worker)."""
    handler = BotLogHandler(bot_id=bot.pk)
    log = logging.getLogger("apps.trading.tick")
    log.addHandler(handler)
    handler.start()
    yield log
    log.removeHandler(handler)
    handler.close()


@pytest.mark.django_db(transaction=True)
def test_a_new_log_line_appears_on_the_bot_page_without_a_reload_masked_and_filtered(
    asgi_server: AsgiServer,  # noqa: F811 - the fixture imported above
    page: Page,
    bot: Bot,
    worker_log: logging.Logger,
) -> None:
    who = make_person("lena", "viewer")
    base = asgi_server.url
    browser_login(page, base, "lena", who.code())
    page.goto(f"{base}/bots/{bot.pk}/")
    expect(page.locator("#live-status")).to_have_text("Live")
    lines = page.locator("#bot-log li.log-line")
    expect(lines).to_have_count(2)
    expect(lines.first).to_contain_text("tick failed (NetworkError)")
    page.evaluate("window.__sameDocument = 42")  # survives only if the page is never reloaded

    worker_log.warning("order refused by the exchange: api_key=%s, retrying", CANARY)
    expect(lines).to_have_count(3)
    newest = lines.first
    expect(newest).to_contain_text("order refused by the exchange: api_key=********, retrying")
    expect(newest.locator(".level")).to_have_text("WARNING")
    expect(newest.locator(".logger")).to_have_text("apps.trading.tick")
    expect(newest).to_have_attribute("data-level", "WARNING")
    assert CANARY not in page.content()
    assert page.evaluate("window.__sameDocument") == 42
    shoot(page, "bot-log")

    # Filtered to errors: the page starts empty and the live tail skips warnings but shows an error.
    page.select_option("#bot-log-level", "error")
    page.click(".botlog-filter button")
    expect(page).to_have_url(f"{base}/bots/{bot.pk}/?level=error")
    expect(page.locator("#live-status")).to_have_text("Live")
    expect(page.locator("#bot-log li.empty")).to_have_text("No log lines at this level yet.")
    worker_log.warning("a warning the error filter hides")
    worker_log.error("the exchange is down (ExchangeNotAvailable)")
    expect(lines).to_have_count(1)
    expect(lines.first).to_contain_text("the exchange is down (ExchangeNotAvailable)")
    expect(page.locator("#bot-log")).not_to_contain_text("a warning the error filter hides")
    assert BotLogLine.objects.filter(bot=bot, message="a warning the error filter hides").exists()
    shoot(page, "bot-log-errors")
