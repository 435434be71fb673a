"""One way to write times, numbers, money and states: apps.core.display, apps.core.words and their template tags."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from django.template import Context, Template

from apps.core import display, words

NOW = datetime(2026, 12, 4, 20, 1, 32, 500_000, tzinfo=UTC)
TIME_TEXT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \((\d+ (s|min|h|d) ago|in \d+ (s|min|h|d))\)$")


@pytest.mark.parametrize(
    ("before", "ago"),
    [
        (timedelta(seconds=12), "12 s ago"),
        (timedelta(minutes=3, seconds=59), "3 min ago"),
        (timedelta(hours=2, minutes=5), "2 h ago"),
        (timedelta(days=5, hours=23), "5 d ago"),
        (timedelta(0), "0 s ago"),
        (-timedelta(minutes=3), "in 3 min"),
    ],
)
def test_a_time_is_utc_with_how_long_ago(before: timedelta, ago: str) -> None:
    at = NOW - before
    assert display.ago_text(at, now=NOW) == ago
    text = display.moment_with_ago(at, now=NOW)
    assert text == f"{display.moment_text(at)} ({ago})" and TIME_TEXT.match(text)


def test_a_time_from_another_zone_or_naive_is_written_in_utc() -> None:
    paris = datetime(2026, 12, 4, 21, 1, 32, tzinfo=UTC).astimezone(ZoneInfo("Europe/Paris"))
    assert display.moment_text(paris) == "2026-12-04 21:01:32 UTC"
    assert display.moment_text(datetime(2026, 12, 4, 20, 1, 32, 999_999)) == "2026-12-04 20:01:32 UTC"


@pytest.mark.parametrize(
    ("value", "places", "text"),
    [
        (Decimal("0.00100000"), None, "0.001"),
        ("0.001", None, "0.001"),
        (Decimal("29900.123456789"), 2, "29,900.12"),
        (Decimal("0.01"), 5, "0.01000"),
        (Decimal("1234567.5"), None, "1,234,567.5"),
        (Decimal("1E+1"), None, "10"),
        (Decimal("9.995"), 2, "10.00"),
        (Decimal("0.123456789"), None, "0.12345679"),
        (Decimal("-0.0000000001"), None, "0"),
        (Decimal("-4.1"), 2, "\u22124.10"),
        (None, None, ""),
        ("not a number", None, "not a number"),
    ],
)
def test_numbers_are_grouped_at_the_market_decimals_or_without_trailing_zeros(
    value: object, places: int | None, text: str
) -> None:
    assert display.number_text(value, places) == text


def test_money_has_its_currency_and_a_gain_or_loss_its_sign_and_word() -> None:
    assert display.money_text(Decimal("1234.5600"), "USDT") == "1,234.56 USDT"
    assert display.money_text(Decimal("0.00150000"), "BTC") == "0.0015 BTC"
    assert display.pnl_text(Decimal("12.3"), "USDT") == "+12.30 USDT (gain)"
    assert display.pnl_text(Decimal("-4.1"), "USDT") == "\u22124.10 USDT (loss)"
    # Rounded to nothing, it is neither.
    assert display.pnl_parts(Decimal("-0.001"), "USDT") == ("0.00 USDT", "even")
    assert display.step_places("0.01") == 2 and display.step_places("1") == 0 and display.step_places(None) is None


@pytest.mark.parametrize(
    ("observed", "desired", "halted", "kind", "text"),
    [
        ("running", "running", False, "", "Running"),
        ("stopped", "stopped", False, "", "Stopped"),
        ("stopped", "running", False, "", "Starting"),
        ("running", "stopped", False, "", "Stopping"),
        ("stopped", "stopped", True, "breaker", "Halted by circuit breaker"),
        ("halted", "running", True, "", "Halted"),
        ("error", "running", False, "", "Error, restarting"),
    ],
)
def test_a_bot_state_is_one_phrase(observed: str, desired: str, halted: bool, kind: str, text: str) -> None:
    assert words.bot_state(observed, desired, halted=halted, halt_kind=kind) == text


def test_codes_get_words_and_unknown_ones_are_made_readable() -> None:
    assert words.audit_action("bot.created") == "Bot created"
    assert words.audit_action("alert.kill_switch") == "Alert raised: kill switch"
    assert words.audit_action("thing.done_now") == "Thing: done now"
    assert words.alert_kind("kill_switch") == "Kill switch" and words.alert_kind("new_kind") == "New kind"
    assert words.word(words.KILL_STEPS, "revoke") == "Revoke bot credentials"
    assert words.counted(1, "bot token") == "1 bot token" and words.counted(2, "bot token") == "2 bot tokens"


def test_every_audit_action_the_code_records_has_its_words() -> None:
    apps = Path(__file__).resolve().parents[2] / "apps"
    recorded = {m[1] for f in apps.rglob("*.py") for m in re.finditer(r'action="([a-z_]+\.[a-z_.]+)"', f.read_text())}
    assert len(recorded) > 50
    assert sorted(recorded - set(words.AUDIT_ACTIONS)) == []


def render(source: str, **context: object) -> str:
    return Template("{% load display %}" + source).render(Context(context))


def test_the_template_tags_write_the_same() -> None:
    at = datetime.now(UTC) - timedelta(minutes=3, seconds=1)
    html = render("{{ at|moment }}", at=at)
    assert html == (
        f'<time datetime="{at.isoformat()}"><span class="at">{display.moment_text(at)}</span> '
        '<span class="ago">(3 min ago)</span></time>'
    )
    assert render('{{ none|moment:"never" }}', none=None) == "never"
    assert render("{{ v|pnl:'BTC/USDT' }}", v=Decimal("-4.1")) == (
        '<span class="pnl loss">\u22124.10 USDT <span class="pnl-word">(loss)</span></span>'
    )
    assert render("{{ v|money:'USDT' }} {{ v|num }}", v=Decimal("1000")) == "1,000.00 USDT 1,000"
    decimals = {"BTC/USDT": (5, 2)}
    assert (
        render(
            "{% amount a 'BTC/USDT' %} {% price p 'BTC/USDT' %} {% price p 'ETH/USDT' %}",
            a=Decimal("0.01"),
            p=Decimal("29900"),
            market_decimals=decimals,
        )
        == "0.01000 29,900.00 29,900"
    )
    bot = SimpleNamespace(observed_state="stopped", desired_state="stopped", halted=True, halt_kind="gate")
    assert render("{{ bot|bot_state }}", bot=bot) == "Halted by the order gate"
    assert render("{{ code|audit_action }}", code="<b>") == "&lt;b&gt;"  # escaped like any text
