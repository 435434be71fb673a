"""Circuit breakers in the control worker: real orders on the sandbox, real ledgers, a real Vault probe."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import Client
from django.utils import timezone

from apps.alerts.models import Alert
from apps.audit.models import AuditEntry
from apps.bots.halts import global_halt_active
from apps.bots.models import Bot
from apps.exchanges import port
from apps.exchanges.models import ExchangeAuthFailure
from apps.exchanges.services import exchange_account_create
from apps.killswitch import breakers
from apps.killswitch.breaker_checks import VaultProbe
from apps.killswitch.breaker_rules import rules_current
from apps.killswitch.breakers import breakers_check
from apps.killswitch.models import BreakerRule, BreakerTrip, KillRun
from apps.strategies.base import OrderIntent
from apps.trading import runtime
from apps.trading.gate import OrderRefused, place_order
from apps.trading.ledger import ledger_for
from apps.trading.reconcile import reconcile
from apps.trading.tasks import bot_tick_task
from apps.vault import client as vault
from launcher.embedded import free_port
from tests.keys import Key
from tests.people import Person
from tests.trading.conftest import Live

pytestmark = pytest.mark.django_db

Kind = BreakerRule.Kind
Action = BreakerRule.Action


def set_rule(kind: str, **fields: Any) -> BreakerRule:
    rule = rules_current()[kind]
    for name, value in fields.items():
        setattr(rule, name, value)
    rule.save()
    return rule


def set_equity(bot: Bot, *, day_start: str, peak: str, last: str) -> None:
    ledger = ledger_for(bot)
    now = timezone.now()
    ledger.day, ledger.equity_at = now.date(), now
    ledger.day_start_equity, ledger.peak_equity, ledger.last_equity = Decimal(day_start), Decimal(peak), Decimal(last)
    ledger.save()


def breaker_alerts(kind: str) -> list[Alert]:
    return [a for a in Alert.objects.filter(kind="circuit_breaker") if a.data.get("breaker") == kind]


def buy(tag: str) -> OrderIntent:
    return OrderIntent("BTC/USDT", "buy", "limit", Decimal("0.001"), Decimal("50000"), tag)


def halted(bot: Bot) -> bool:
    bot.refresh_from_db()
    return bot.halted


def test_a_bots_daily_loss_halts_it_once_and_clears_when_it_recovers(make_bot: Callable[..., Bot]) -> None:
    losing = make_bot(desired_state="running", daily_loss_limit=Decimal("100"))
    fine = make_bot(desired_state="running", daily_loss_limit=Decimal("100"))
    set_equity(losing, day_start="1000", peak="1000", last="850")
    set_equity(fine, day_start="1000", peak="1000", last="950")

    opened = breakers_check()
    assert [(t.kind, t.subject) for t in opened] == [(Kind.BOT_DAILY_LOSS, f"bot:{losing.pk}")]
    assert halted(losing) and not halted(fine)
    assert len(breaker_alerts(Kind.BOT_DAILY_LOSS)) == 1
    assert AuditEntry.objects.filter(action="alert.circuit_breaker", data__breaker=Kind.BOT_DAILY_LOSS).exists()
    assert AuditEntry.objects.filter(action="bot.halted", target_id=str(losing.pk)).exists()

    assert breakers_check() == []  # the condition persists: no second trip, no second alert
    assert len(breaker_alerts(Kind.BOT_DAILY_LOSS)) == 1

    set_equity(losing, day_start="1000", peak="1000", last="990")
    breakers_check()
    trip = BreakerTrip.objects.get(kind=Kind.BOT_DAILY_LOSS)
    assert trip.cleared_at is not None
    assert AuditEntry.objects.filter(action="breaker.cleared", data__breaker=Kind.BOT_DAILY_LOSS).exists()


def test_a_bots_drawdown_with_action_alert_only_halts_nothing(make_bot: Callable[..., Bot]) -> None:
    set_rule(Kind.BOT_DRAWDOWN, action=Action.ALERT)
    bot = make_bot(desired_state="running", max_drawdown_pct=Decimal("10"))
    set_equity(bot, day_start="1000", peak="1100", last="935")  # 15 % below the peak
    opened = breakers_check()
    assert [t.kind for t in opened] == [Kind.BOT_DRAWDOWN]
    assert not halted(bot)
    assert "15.00%" in breaker_alerts(Kind.BOT_DRAWDOWN)[0].message


def test_the_fleet_loss_breaker_kills_everything_and_the_gate_refuses_the_next_order(
    make_bot: Callable[..., Bot], live: Live, new_key: Callable[..., Key]
) -> None:
    set_rule(Kind.FLEET_DAILY_LOSS, threshold=Decimal("300"), action=Action.KILL_ALL)
    # Each bot alone is within its own limit; together, on two accounts, they lose beyond the fleet's.
    a = make_bot(desired_state="running", daily_loss_limit=Decimal("1000"))
    key = new_key()
    other, _ = exchange_account_create(
        label=f"second-{key.api_key[-8:]}",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    b = make_bot(desired_state="running", daily_loss_limit=Decimal("1000"), account=other)
    set_equity(a, day_start="1000", peak="1000", last="800")
    set_equity(b, day_start="1000", peak="1000", last="800")

    opened = breakers_check()
    assert [(t.kind, t.subject) for t in opened] == [(Kind.FLEET_DAILY_LOSS, "fleet")]
    assert global_halt_active()
    run = KillRun.objects.get()
    assert run.requested_via == "breaker" and "fleet_daily_loss" in run.reason
    assert BreakerTrip.objects.get(kind=Kind.FLEET_DAILY_LOSS).data["kill_run"] == run.pk
    assert set(Bot.objects.values_list("desired_state", flat=True)) == {"stopped"}

    before = live.requests()
    with pytest.raises(OrderRefused):
        place_order(bot=Bot.objects.get(pk=a.pk), exchange=live.exchange, intent=buy("t-1"))
    assert live.requests() == before  # the exchange received nothing


def test_the_fleet_drawdown_sums_the_bots_own_ledgers(make_bot: Callable[..., Bot]) -> None:
    set_rule(Kind.FLEET_DRAWDOWN, threshold=Decimal("20"), action=Action.ALERT)
    set_rule(Kind.BOT_DRAWDOWN, enabled=False)
    # Two bots on one account, each with its own equity: the fleet is 2000 at peak.
    a = make_bot(desired_state="running")
    b = make_bot(desired_state="running")
    set_equity(a, day_start="1000", peak="1000", last="800")
    set_equity(b, day_start="1000", peak="1000", last="800")
    assert breakers_check() == []  # 20 % is not beyond 20 %
    set_equity(b, day_start="1000", peak="1000", last="750")
    opened = breakers_check()
    assert [t.kind for t in opened] == [Kind.FLEET_DRAWDOWN]
    assert "22.50%" in opened[0].message and opened[0].data["bot_count"] == 2


def test_an_order_rate_spike_halts_the_bots_that_placed_them(make_bot: Callable[..., Bot], live: Live) -> None:
    set_rule(Kind.ORDER_RATE, threshold=Decimal("5"), window_s=60, action=Action.HALT_BOT)
    bot = make_bot(desired_state="running", max_orders_per_minute=100, max_open_orders=100)
    quiet = make_bot(desired_state="running")
    for i in range(5):
        place_order(bot=bot, exchange=live.exchange, intent=buy(f"r-{i}"))
    assert breakers_check() == []  # 5 is the limit, not beyond it
    place_order(bot=bot, exchange=live.exchange, intent=buy("r-5"))
    opened = breakers_check()
    assert [t.kind for t in opened] == [Kind.ORDER_RATE]
    assert opened[0].data["orders"] == 6
    assert halted(bot) and not halted(quiet)
    before = live.requests()
    with pytest.raises(OrderRefused):
        place_order(bot=Bot.objects.get(pk=bot.pk), exchange=live.exchange, intent=buy("r-6"))
    assert live.requests() == before


def test_a_foreign_order_found_by_reconciliation_halts_the_accounts_bots(
    make_bot: Callable[..., Bot], live: Live
) -> None:
    bot = make_bot(desired_state="running")
    # Somebody else trades with the key: an order the console never placed.
    live.ccxt.create_order("BTC/USDT", "limit", "buy", 0.001, 40000)
    report = reconcile(bot=bot, exchange=live.exchange)
    assert len(report.foreign) == 1
    opened = breakers_check()
    assert [(t.kind, t.subject) for t in opened] == [(Kind.FOREIGN_ORDERS, f"account:{live.account.pk}")]
    assert halted(bot)


def test_repeated_key_rejections_from_ticks_halt_the_accounts_bots(make_bot: Callable[..., Bot], live: Live) -> None:
    set_rule(Kind.AUTH_ERRORS, threshold=Decimal("3"), window_s=300, action=Action.HALT_BOT)
    bot = make_bot(desired_state="running")
    # The key's secret no longer matches (revoked and replaced at the exchange, or stolen and changed):
    # the exchange rejects every signed request of this worker.
    wrong = port.Exchange(exchange_id="sandbox", credentials={**live.key.form(), "secret": "x" * 64})
    saved = runtime._runtime
    runtime._runtime = runtime.Runtime(bot_id=bot.pk, exchange=wrong)
    try:
        for _ in range(2):
            bot_tick_task(bot.pk, chain=runtime._runtime.chain)
        assert ExchangeAuthFailure.objects.filter(account=live.account).count() == 2
        assert breakers_check() == []
        bot_tick_task(bot.pk, chain=runtime._runtime.chain)
    finally:
        runtime._runtime = saved
        redis.Redis.from_url(settings.REDIS_URL).delete(bot.queue)  # the ticks each queued a next one
    assert ExchangeAuthFailure.objects.filter(account=live.account, bot=bot, error="KeyRejected").count() == 3
    opened = breakers_check()
    assert [(t.kind, t.subject) for t in opened] == [(Kind.AUTH_ERRORS, f"account:{live.account.pk}")]
    assert halted(bot)


def test_an_unreachable_vault_trips_after_three_failed_checks_and_clears_when_back(
    services: Any, make_bot: Callable[..., Bot]
) -> None:
    bot = make_bot(desired_state="running")
    dead = VaultProbe(lambda: vault.health(f"http://127.0.0.1:{free_port()}"))  # nothing listens there
    assert breakers_check(probe=dead) == [] and breakers_check(probe=dead) == []
    opened = breakers_check(probe=dead)
    assert [t.kind for t in opened] == [Kind.VAULT_UNREACHABLE]
    assert "3 health checks" in opened[0].message
    assert not halted(bot)  # the default action is an alert only
    alive = VaultProbe()
    breakers_check(probe=alive)
    assert BreakerTrip.objects.get(kind=Kind.VAULT_UNREACHABLE).cleared_at is not None


def test_a_disabled_breaker_never_trips(make_bot: Callable[..., Bot]) -> None:
    set_rule(Kind.BOT_DAILY_LOSS, enabled=False)
    set_rule(Kind.BOT_DRAWDOWN, enabled=False)
    bot = make_bot(desired_state="running", daily_loss_limit=Decimal("10"))
    set_equity(bot, day_start="1000", peak="1000", last="900")
    assert breakers_check() == [] and not halted(bot)


def test_yesterdays_loss_does_not_trip_todays_breaker(make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(desired_state="running", daily_loss_limit=Decimal("10"), max_drawdown_pct=Decimal("90"))
    set_equity(bot, day_start="1000", peak="1000", last="900")
    ledger = ledger_for(bot)
    ledger.day = (timezone.now() - dt.timedelta(days=1)).date()
    ledger.save()
    assert breakers_check() == []


# -- the page -----------------------------------------------------------------------------------


def test_everyone_sees_the_breakers_only_an_admin_with_a_fresh_code_changes_them(
    logged_in: Callable[[str], tuple[Client, Person]],
) -> None:
    viewer, _ = logged_in("viewer")
    page = viewer.get("/killswitch/breakers/").content.decode()
    assert "Daily loss across all live accounts" in page and 'name="threshold"' not in page
    form = {"enabled": "on", "action": "alert", "threshold": "500", "window_s": "60"}
    assert viewer.post("/killswitch/breakers/fleet_daily_loss/", form).status_code == 403
    operator, _ = logged_in("operator")
    assert operator.post("/killswitch/breakers/fleet_daily_loss/", form).status_code == 403

    admin, who = logged_in("admin")
    assert 'name="threshold"' in admin.get("/killswitch/breakers/").content.decode()
    response = admin.post("/killswitch/breakers/fleet_daily_loss/", form)
    assert response["Location"].startswith("/accounts/step-up/")
    rule = rules_current()[Kind.FLEET_DAILY_LOSS]
    assert (rule.action, rule.threshold) == (Action.KILL_ALL, Decimal("1000"))  # unchanged

    admin.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    assert admin.post("/killswitch/breakers/fleet_daily_loss/", form)["Location"] == "/killswitch/breakers/"
    rule.refresh_from_db()
    assert (rule.action, rule.threshold, rule.enabled) == (Action.ALERT, Decimal("500"), True)
    entry = AuditEntry.objects.get(action="breaker.rule_changed")
    assert entry.actor_user == who.user
    assert entry.data["before"]["threshold"] == "1000" and entry.data["after"]["threshold"] == "500"


@pytest.mark.parametrize(
    ("kind", "form", "error"),
    [
        ("fleet_daily_loss", {"action": "alert", "threshold": "lots"}, "is not a number"),
        ("fleet_daily_loss", {"action": "alert", "threshold": "-5"}, "must be between 0.01 and 1000000000"),
        ("fleet_daily_loss", {"action": "alert", "threshold": "NaN"}, "must be a number between 0.01 and 1000000000"),
        ("fleet_daily_loss", {"action": "alert", "threshold": "Infinity"}, "must be a number between"),
        ("fleet_daily_loss", {"action": "alert", "threshold": "1e13"}, "must be between 0.01 and 1000000000"),
        ("fleet_daily_loss", {"action": "alert", "threshold": "1e999999999"}, "must be between 0.01 and"),
        ("fleet_daily_loss", {"action": "alert", "threshold": "1.000000001"}, "at most 8 decimal places"),
        ("fleet_daily_loss", {"action": "alert", "threshold": "9" * 10_000}, "too long to be a number"),
        ("fleet_daily_loss", {"action": "alert", "threshold": "5\x00"}, "plain digits"),
        ("fleet_daily_loss", {"action": "alert", "threshold": "\u0665"}, "plain digits"),
        ("fleet_drawdown", {"action": "alert", "threshold": "1000"}, "must be between 0.01 and 100"),
        ("order_rate", {"action": "alert", "threshold": "2.5", "window_s": "60"}, "give a whole number between 1"),
        ("fleet_daily_loss", {"action": "explode", "threshold": "5"}, "Choose what the breaker does"),
        ("fleet_daily_loss", {"action": "alert\x00", "threshold": "5"}, "Choose what the breaker does"),
        ("order_rate", {"action": "alert", "threshold": "5", "window_s": "0"}, "between 1 and 604800 seconds"),
        ("order_rate", {"action": "alert", "threshold": "5", "window_s": "99999999999999"}, "between 1 and 604800"),
        ("order_rate", {"action": "alert", "threshold": "5", "window_s": "1.5"}, "not a whole number"),
        ("order_rate", {"action": "alert", "threshold": "5", "window_s": "-1"}, "not a whole number"),
    ],
)
def test_bad_breaker_input_is_refused_and_changes_nothing(
    logged_in: Callable[[str], tuple[Client, Person]], kind: str, form: dict[str, str], error: str
) -> None:
    admin, who = logged_in("admin")
    admin.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    before = {r.kind: (r.enabled, r.action, r.threshold, r.window_s) for r in rules_current().values()}
    page = admin.post(f"/killswitch/breakers/{kind}/", {"enabled": "on", **form}, follow=True).content.decode()
    assert error in page
    after = {r.kind: (r.enabled, r.action, r.threshold, r.window_s) for r in rules_current().values()}
    assert after == before
    assert not AuditEntry.objects.filter(action="breaker.rule_changed").exists()


def test_an_unknown_breaker_is_not_found_and_changes_nothing(
    logged_in: Callable[[str], tuple[Client, Person]],
) -> None:
    admin, who = logged_in("admin")
    admin.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    for kind in ("no_such_breaker", "x" * 5000):
        assert admin.post(f"/killswitch/breakers/{kind}/", {"action": "alert", "threshold": "5"}).status_code == 404
    assert not AuditEntry.objects.filter(action="breaker.rule_changed").exists()


@pytest.mark.django_db(transaction=True)
def test_the_control_worker_loop_trips_a_breaker_without_anyone_asking(make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(desired_state="running", daily_loss_limit=Decimal("100"))
    set_equity(bot, day_start="1000", peak="1000", last="850")
    stop = threading.Event()
    thread = threading.Thread(target=breakers._loop, args=(stop, 0.2), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not BreakerTrip.objects.filter(kind=Kind.BOT_DAILY_LOSS).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert BreakerTrip.objects.filter(kind=Kind.BOT_DAILY_LOSS, subject=f"bot:{bot.pk}").count() == 1
    assert halted(bot)


def test_only_the_control_worker_runs_the_breakers() -> None:
    from tests.killswitch.test_engine import _worker

    started: list[bool] = []
    real = breakers.start_loop
    breakers.start_loop = lambda stop=None: started.append(True)
    try:
        breakers._on_worker_ready(sender=_worker("bot.7"))
        assert started == []
        breakers._on_worker_ready(sender=_worker("control"))
        assert started == [True]
    finally:
        breakers.start_loop = real
