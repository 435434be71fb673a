"""/metrics: values read from the real database and Redis at scrape time, and who may scrape.

Counts are compared before and after the test's own rows and queue messages, so rows or
messages other tests of this session left behind cannot make a number wrong or right.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import Client
from django.utils import timezone
from kombu.transport.redis import Channel as RedisChannel
from prometheus_client.parser import text_string_to_metric_families

from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.killswitch.models import KillRun
from apps.trading.models import GateRefusal, Order
from tests.live.conftest import socket

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TOKEN = "metrics-scraper-token-for-tests"


def scrape(client: Client | None = None, **extra: Any) -> Samples:
    response = (client or Client()).get("/metrics", **extra)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def make_bot(name: str, *, mode: str, observed: str, halted: bool = False) -> Bot:
    account = ExchangeAccount.objects.create(
        label=f"metrics-{name}",
        exchange_id="sandbox",
        key_fingerprint="abcd",
        key_digest="0" * 64,
        withdrawals=ExchangeAccount.Withdrawals.DISABLED,
    )
    return Bot.objects.create(
        name=f"metrics-{name}",
        account=account,
        strategy="grid",
        symbols=["BTC/USDT"],
        mode=mode,
        params={"lower": "55000", "upper": "65000", "levels": 5, "order_amount": "0.001"},
        max_order_notional=Decimal("1000"),
        max_position_notional=Decimal("5000"),
        daily_loss_limit=Decimal("1000"),
        max_drawdown_pct=Decimal("50"),
        observed_state=observed,
        halted=halted,
    )


def make_order(bot: Bot, n: int, status: str, *, paper: bool) -> Order:
    return Order.objects.create(
        bot=bot,
        account=bot.account,
        symbol="BTC/USDT",
        side="buy",
        type="limit",
        amount=1,
        price=1,
        client_order_id=f"metrics-{bot.pk}-{n}",
        intent_tag="t",
        status=status,
        paper=paper,
    )


def refuse(bot: Bot, reason: str, *, age: timedelta = timedelta()) -> None:
    GateRefusal.objects.create(
        bot=bot,
        symbol="BTC/USDT",
        side="buy",
        amount=1,
        reason=reason,
        message="refused",
        created_at=timezone.now() - age,
    )


def finished_kill(status: str, took: timedelta, finished_ago: timedelta) -> KillRun:
    run = KillRun.objects.create(scope=KillRun.Scope.ALL, reason="metrics drill", status=status)
    finished_at = timezone.now() - finished_ago
    KillRun.objects.filter(pk=run.pk).update(created_at=finished_at - took, finished_at=finished_at)
    return run


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(settings.REDIS_URL)
    yield r
    r.close()


# -- the numbers -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_counts_bots_orders_refusals_and_kill_runs_from_the_database() -> None:
    before = scrape()
    live = make_bot("live", mode=Bot.Mode.LIVE, observed=Bot.Observed.RUNNING)
    make_bot("live2", mode=Bot.Mode.LIVE, observed=Bot.Observed.RUNNING, halted=True)
    paper = make_bot("paper", mode=Bot.Mode.PAPER, observed=Bot.Observed.STOPPED)
    for n, status in enumerate([Order.Status.OPEN, Order.Status.OPEN, Order.Status.FILLED]):
        make_order(live, n, status, paper=False)
    make_order(paper, 9, Order.Status.OPEN, paper=True)
    refuse(live, GateRefusal.Reason.GLOBAL_HALT)
    refuse(live, GateRefusal.Reason.GLOBAL_HALT, age=timedelta(hours=2))
    refuse(paper, GateRefusal.Reason.RATE)
    finished_kill(KillRun.Status.DONE, timedelta(milliseconds=400), finished_ago=timedelta(minutes=5))
    finished_kill(KillRun.Status.FAILED, timedelta(seconds=3), finished_ago=timedelta(seconds=1))
    KillRun.objects.create(scope=KillRun.Scope.ALL, reason="not executed yet")

    after = scrape()
    assert delta(before, after, "botconsole_bots", state="running", mode="live") == 2
    assert delta(before, after, "botconsole_bots", state="stopped", mode="paper") == 1
    assert delta(before, after, "botconsole_bots", state="running", mode="paper") == 0
    assert delta(before, after, "botconsole_bots_halted", mode="live") == 1
    assert delta(before, after, "botconsole_orders", status="open", mode="live") == 2
    assert delta(before, after, "botconsole_orders", status="filled", mode="live") == 1
    assert delta(before, after, "botconsole_orders", status="open", mode="paper") == 1
    assert delta(before, after, "botconsole_orders", status="filled", mode="paper") == 0
    assert delta(before, after, "botconsole_gate_refusals_total", reason="global_halt") == 2
    assert delta(before, after, "botconsole_gate_refusals_last_hour", reason="global_halt") == 1
    assert delta(before, after, "botconsole_gate_refusals_total", reason="max_orders_per_minute") == 1
    assert delta(before, after, "botconsole_kill_runs", status="done") == 1
    assert delta(before, after, "botconsole_kill_runs", status="failed") == 1
    assert delta(before, after, "botconsole_kill_runs", status="pending") == 1
    # The histogram holds the two finished runs: 0.4 s under the 0.5 s bucket, 3 s under 5 s.
    assert delta(before, after, "botconsole_kill_duration_seconds_bucket", le="0.25") == 0
    assert delta(before, after, "botconsole_kill_duration_seconds_bucket", le="0.5") == 1
    assert delta(before, after, "botconsole_kill_duration_seconds_bucket", le="2.0") == 1
    assert delta(before, after, "botconsole_kill_duration_seconds_bucket", le="5.0") == 2
    assert delta(before, after, "botconsole_kill_duration_seconds_bucket", le="+Inf") == 2
    assert delta(before, after, "botconsole_kill_duration_seconds_count") == 2
    assert delta(before, after, "botconsole_kill_duration_seconds_sum") == pytest.approx(3.4)
    assert value(after, "botconsole_kill_last_duration_seconds") == pytest.approx(3.0)
    assert value(after, "botconsole_metrics_source_up", source="database") == 1
    assert value(after, "botconsole_metrics_source_up", source="redis") == 1


@pytest.mark.django_db
def test_it_reports_the_length_of_every_celery_queue_with_its_priority_lists(broker: redis.Redis) -> None:
    bot = make_bot("queued", mode=Bot.Mode.LIVE, observed=Bot.Observed.RUNNING)
    other = make_bot("idle", mode=Bot.Mode.PAPER, observed=Bot.Observed.STOPPED)
    queue, priority_list = bot.queue, f"{bot.queue}{RedisChannel.sep}6"
    before = scrape()
    marker = f"metrics-test-{bot.pk}"
    try:
        broker.rpush(queue, b"{}", b"{}", b"{}")
        broker.rpush(priority_list, b"{}")
        broker.rpush("control", marker, marker)
        after = scrape()
    finally:
        broker.delete(queue, priority_list)
        broker.lrem("control", 0, marker)
    assert value(after, "botconsole_celery_queue_length", queue=queue) == 4
    assert value(after, "botconsole_celery_queue_length", queue=other.queue) == 0
    assert delta(before, after, "botconsole_celery_queue_length", queue="control") == 2
    assert ("botconsole_celery_unacked", frozenset()) in after
    assert value(scrape(), "botconsole_celery_queue_length", queue=queue) == 0


@pytest.mark.django_db(transaction=True)
def test_an_open_websocket_is_counted_and_uncounted_when_it_closes(logged_in: Any) -> None:
    client, _ = logged_in("viewer")
    counts: list[float] = []

    async def scenario() -> None:
        from asgiref.sync import sync_to_async

        count = sync_to_async(lambda: value(scrape(), "botconsole_websocket_clients"))
        counts.append(await count())
        first, second = socket(client), socket(client)
        assert (await first.connect(timeout=3))[0]
        assert (await second.connect(timeout=3))[0]
        counts.append(await count())
        await first.disconnect()
        counts.append(await count())
        await second.disconnect()
        counts.append(await count())

    async_to_sync(scenario)()
    base = counts[0]
    assert counts == [base, base + 2, base + 1, base]


@pytest.mark.django_db
def test_an_unreachable_redis_shows_as_a_source_down_not_as_empty_queues(settings: Any) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens on the discard port
    samples = scrape()
    assert value(samples, "botconsole_metrics_source_up", source="redis") == 0
    assert value(samples, "botconsole_metrics_source_up", source="database") == 1
    assert not any(name.startswith(("botconsole_celery_", "botconsole_websocket_")) for name, _ in samples)
    assert ("botconsole_bots", frozenset({("state", "running"), ("mode", "live")})) in samples


# -- who may scrape ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_answers_a_local_scraper_without_a_session() -> None:
    assert value(scrape(REMOTE_ADDR="127.0.0.1"), "botconsole_metrics_source_up", source="database") == 1
    assert value(scrape(REMOTE_ADDR="::1"), "botconsole_metrics_source_up", source="database") == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "extra",
    [
        {"REMOTE_ADDR": "203.0.113.7"},
        {"REMOTE_ADDR": "10.1.2.3"},
        # Through a reverse proxy on the same machine: the address is loopback, the client is not.
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "203.0.113.7"},
    ],
)
def test_it_refuses_a_remote_scraper_without_a_token(extra: dict[str, Any], settings: Any) -> None:
    settings.METRICS_TOKEN_SHA256 = hashlib.sha256(TOKEN.encode()).hexdigest()
    response = Client().get("/metrics", **extra)
    assert response.status_code == 403
    assert b"botconsole_" not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("header", [f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}"])
def test_it_refuses_a_wrong_token_even_from_loopback(header: str, settings: Any) -> None:
    settings.METRICS_TOKEN_SHA256 = hashlib.sha256(TOKEN.encode()).hexdigest()
    for address in ("203.0.113.7", "127.0.0.1"):
        response = Client().get("/metrics", REMOTE_ADDR=address, HTTP_AUTHORIZATION=header)
        assert response.status_code == 403, (header, address)
        assert b"botconsole_" not in response.content


@pytest.mark.django_db
def test_it_refuses_every_token_when_none_is_configured(settings: Any) -> None:
    settings.METRICS_TOKEN_SHA256 = ""
    response = Client().get("/metrics", REMOTE_ADDR="203.0.113.7", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 403


@pytest.mark.django_db
def test_it_accepts_the_right_token_from_anywhere(settings: Any) -> None:
    settings.METRICS_TOKEN_SHA256 = hashlib.sha256(TOKEN.encode()).hexdigest()
    samples = scrape(
        REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="203.0.113.7", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
    )
    assert value(samples, "botconsole_metrics_source_up", source="database") == 1


@pytest.mark.django_db
def test_it_names_no_user_and_no_account_label(logged_in: Any) -> None:
    _, who = logged_in("admin")
    make_bot("named", mode=Bot.Mode.LIVE, observed=Bot.Observed.RUNNING)
    body = Client().get("/metrics").content.decode()
    assert who.user.username not in body
    assert "metrics-named" not in body  # neither the bot's nor the account's label
    assert settings.REDIS_URL.split("@")[0] not in body


@pytest.mark.django_db
def test_it_refuses_post() -> None:
    assert Client().post("/metrics").status_code == 405
