"""Bot logs: a bot worker's log lines stored (masked), shown on the bot page with a level filter, tailed live, purged.

The handler's writer thread uses its own database connection, so these tests commit (transaction=True):
a row the test's transaction had not committed would be invisible to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.bots.fleet import Fleet
from apps.bots.models import Bot
from apps.events.models import Event
from apps.exchanges.services import exchange_account_create
from apps.live.selectors import can_see
from apps.trading import logs
from apps.trading.models import BotLogLine
from apps.trading.tasks import bot_log_purge_task
from tests.fleet_support import fleet_vault, fork_fleet, spawn_fleet, wait_until, worker_env  # noqa: F401 - fixtures
from tests.keys import Key
from tests.leaks import pg_dump
from tests.people import Person, full_login

CANARY = "CANARY-7c1d2e3f4a5b"
Login = Callable[[str], tuple[Client, Person]]
# Where the bot's code logs (any logger under the root reaches the handler).
bot_logger = logging.getLogger("apps.trading.tasks")


@pytest.fixture
def installed(make_bot: Callable[..., Bot]) -> Iterator[tuple[Bot, logs.BotLogHandler]]:
    """The handler installed as a bot worker installs it (on the root and celery loggers, writer thread running)."""
    bot = make_bot()
    handler = logs.bot_log_install(bot_id=bot.pk)
    try:
        yield bot, handler
    finally:
        logs.bot_log_uninstall()


def lines_of(bot: Bot) -> list[BotLogLine]:
    return list(BotLogLine.objects.filter(bot=bot).order_by("id"))


def page(client: Client, bot: Bot, **params: str) -> Any:
    return client.get(reverse("bots:detail", kwargs={"bot_id": bot.pk}), params)


# -- storing: masked, with its level, in batches -------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_secret_logged_by_a_bot_worker_is_stored_masked_never_in_clear(
    installed: tuple[Bot, logs.BotLogHandler],
) -> None:
    bot, handler = installed
    # A record that reaches this handler alone: no other handler's filter has masked it first.
    alone = logging.getLogger("tests.bot_logs.alone")
    alone.propagate = False
    alone.addHandler(handler)
    try:
        alone.warning("login with password=%s", CANARY)
    finally:
        alone.removeHandler(handler)
    bot_logger.warning("connecting with api_key=%s", CANARY)
    bot_logger.info("account %s", {"apiKey": "k", "secret": CANARY})
    bot_logger.error("vault said", extra={"token": CANARY})
    try:
        raise RuntimeError(f"failed with secret={CANARY}")
    except RuntimeError:
        bot_logger.exception("tick failed")
    logs.bot_log_uninstall()  # stores what is queued, as at the worker's shutdown

    stored = lines_of(bot)
    assert [(line.level, line.logger) for line in stored] == [
        (logging.WARNING, "tests.bot_logs.alone"),
        (logging.WARNING, "apps.trading.tasks"),
        (logging.INFO, "apps.trading.tasks"),
        (logging.ERROR, "apps.trading.tasks"),
        (logging.ERROR, "apps.trading.tasks"),
    ]
    assert stored[0].message == "login with password=********"
    assert stored[1].message == "connecting with api_key=********"
    assert "'secret': '********'" in stored[2].message
    assert stored[4].message.startswith("tick failed\nTraceback") and "secret=********" in stored[4].message
    # Nowhere in the database: not the lines, not the live events, not anything else.
    assert CANARY not in pg_dump()


@pytest.mark.django_db(transaction=True)
def test_lines_are_written_by_the_thread_within_a_second_and_announced_as_one_event_per_batch(
    installed: tuple[Bot, logs.BotLogHandler],
) -> None:
    bot, handler = installed
    after = Event.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    for n in range(3):
        bot_logger.info("line %s of the batch", n)
    bot_logger.debug("below the level: not stored")
    wait_until(lambda: len(lines_of(bot)) == 3, "the writer thread to store the lines", timeout=5)
    assert handler.pending() == 0 and handler.dropped == 0
    events = list(Event.objects.filter(kind="bot_log", bot=bot, seq__gt=after))
    assert len(events) == 1
    assert [line["message"] for line in events[0].payload["lines"]] == [f"line {n} of the batch" for n in range(3)]
    assert {line["level"] for line in events[0].payload["lines"]} == {"INFO"}


def _database_connections() -> int:
    """How many connections this process holds to PostgreSQL (every thread's)."""
    import psutil

    port = int(connection.settings_dict["PORT"])
    held = psutil.Process().net_connections(kind="tcp")
    return sum(1 for c in held if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


@pytest.mark.django_db(transaction=True)
def test_the_writer_thread_holds_no_database_session_between_batches(
    installed: tuple[Bot, logs.BotLogHandler],
) -> None:
    """A worker keeps one connection (its ticks'); its log lines come now and then and do not keep a second one: a
    hundred bots holding two each ran PostgreSQL out of connection slots."""
    bot, _ = installed
    connection.ensure_connection()
    before = _database_connections()
    bot_logger.info("one line")
    wait_until(lambda: len(lines_of(bot)) == 1, "the writer thread to store the line", timeout=5)
    wait_until(lambda: _database_connections() == before, "the writer thread to let its connection go", timeout=5)


@pytest.mark.django_db(transaction=True)
def test_unstorable_text_is_made_storable_and_long_lines_are_cut(installed: tuple[Bot, logs.BotLogHandler]) -> None:
    bot, handler = installed
    # Given to the bot's handler only, not passed on to pytest's own log capture: a lone surrogate cannot
    # travel in a test report between make test's two processes.
    bot_logger.addHandler(handler)
    bot_logger.propagate = False
    try:
        bot_logger.warning("nul \x00 and a lone surrogate \udc80 here")
        bot_logger.warning("x" * 5000)
    finally:
        bot_logger.propagate = True
        bot_logger.removeHandler(handler)
    logs.bot_log_uninstall()
    first, second = lines_of(bot)
    assert first.message == "nul \ufffd and a lone surrogate \ufffd here"
    assert len(second.message) == BotLogLine.MESSAGE_MAX and second.message.endswith("…")


# -- never blocking the tick ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_full_queue_drops_the_oldest_counts_them_and_logging_never_waits_for_the_database(
    make_bot: Callable[..., Bot],
) -> None:
    bot = make_bot()
    handler = logs.BotLogHandler(bot_id=bot.pk, queue_max=50, batch_lines=10, flush_every_s=0.05)
    quiet = logging.getLogger("tests.bot_logs.blocked")
    quiet.propagate = False
    quiet.addHandler(handler)
    handler.start()
    try:
        # The table locked by another transaction: the writer's INSERT waits; the logging side must not.
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {BotLogLine._meta.db_table} IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            for n in range(1000):
                quiet.warning("line %s", n)
            elapsed = time.monotonic() - started
            assert elapsed < 1.0, f"1000 log calls took {elapsed:.2f} s while the database was locked"
            assert handler.pending() == 50
            assert handler.dropped >= 1000 - 50 - 10
        # The lock is gone: what was kept is stored, with a line saying how many were lost.
        wait_until(lambda: handler.pending() == 0, "the queue to drain", timeout=10)
    finally:
        quiet.removeHandler(handler)
        handler.close()
    stored = lines_of(bot)
    notes = [line for line in stored if "dropped" in line.message]
    kept = [line.message for line in stored if line not in notes]
    assert kept[-50:] == [f"line {n}" for n in range(950, 1000)]  # the newest survive
    assert notes and all(note.level == logging.WARNING for note in notes)
    assert sum(int(note.message.split()[0]) for note in notes) == handler.dropped
    assert len(kept) + handler.dropped == 1000  # every line is stored or counted


# -- the bot page ----------------------------------------------------------------------------------


def _line(bot: Bot, level: int, message: str, age: timedelta = timedelta(0)) -> BotLogLine:
    return BotLogLine.objects.create(
        bot=bot, level=level, logger="apps.trading.tasks", message=message, created_at=timezone.now() - age
    )


@pytest.mark.django_db
def test_the_bot_page_shows_the_newest_lines_with_their_level_and_filters_by_level(
    logged_in: Login, make_bot: Callable[..., Bot]
) -> None:
    bot, other = make_bot(), make_bot()
    _line(bot, logging.INFO, "an info line of the bot", timedelta(seconds=2))
    _line(bot, logging.WARNING, "a warning of the bot", timedelta(seconds=1))
    _line(other, logging.ERROR, "another bot's error")
    client, _ = logged_in("viewer")

    everything = page(client, bot).content.decode()
    assert "an info line of the bot" in everything and "a warning of the bot" in everything
    assert "another bot&#x27;s error" not in everything and "another bot's error" not in everything
    assert everything.index("a warning of the bot") < everything.index("an info line of the bot")  # newest first
    assert 'data-level="WARNING"' in everything and 'data-level="INFO"' in everything

    warnings = page(client, bot, level="warning")
    assert warnings.status_code == 200
    text = warnings.content.decode()
    assert "a warning of the bot" in text and "an info line of the bot" not in text
    assert 'data-min-level="30"' in text  # the live tail keeps the same filter

    assert "No log lines at this level yet." in page(client, bot, level="error").content.decode()


@pytest.mark.django_db
def test_the_page_shows_at_most_200_lines(logged_in: Login, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot()
    BotLogLine.objects.bulk_create(
        [BotLogLine(bot=bot, level=logging.INFO, logger="x", message=f"numbered line {n:04d}") for n in range(250)]
    )
    text = page(logged_in("viewer")[0], bot).content.decode()
    assert text.count('class="log-line') == 200
    assert "numbered line 0249" in text and "numbered line 0049" not in text


@pytest.mark.django_db
@pytest.mark.parametrize("level", ["verbose", "30", "warning'><script>", "\x00"])
def test_a_bad_level_is_a_400_with_a_clear_message(logged_in: Login, make_bot: Callable[..., Bot], level: str) -> None:
    bot = make_bot()
    _line(bot, logging.INFO, "a line that a bad request does not show")
    response = page(logged_in("viewer")[0], bot, level=level)
    assert response.status_code == 400
    text = response.content.decode()
    assert "Unknown log level" in text and "a line that a bad request does not show" not in text
    assert "<script>" not in text


@pytest.mark.django_db
def test_anonymous_gets_the_login_page_not_the_lines(make_bot: Callable[..., Bot]) -> None:
    bot = make_bot()
    _line(bot, logging.WARNING, "a line for logged-in people only")
    response = page(Client(), bot)
    assert response.status_code == 302 and response["Location"].startswith(reverse("accounts:login"))
    assert "a line for logged-in people only" not in response.content.decode()


# -- the live event: only for who may see the bot --------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_bot_log_event_reaches_a_viewer_and_no_one_without_the_console(
    installed: tuple[Bot, logs.BotLogHandler], logged_in: Login, person: Callable[..., Person]
) -> None:
    bot, _handler = installed
    after = Event.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    bot_logger.warning("a line for the live tail")
    wait_until(lambda: Event.objects.filter(kind="bot_log", bot=bot, seq__gt=after).exists(), "the event", timeout=5)
    event = Event.objects.get(kind="bot_log", bot=bot, seq__gt=after)

    viewer, seer = logged_in("viewer")
    body = viewer.get(reverse("live:events"), {"after": after, "bot": bot.pk}).json()
    tails = [e for e in body["events"] if e["kind"] == "bot_log"]
    assert [line["message"] for e in tails for line in e["data"]["lines"]] == ["a line for the live tail"]

    # Someone whose role was taken away (no view_console) gets neither the catch-up nor the socket's events.
    nobody = person("no-role", "viewer")
    nobody.user.groups.clear()
    client = Client()
    full_login(client, nobody)
    refused = client.get(reverse("live:events"), {"after": after, "bot": bot.pk})
    assert refused.status_code == 403 and "a line for the live tail" not in refused.content.decode()
    fresh = type(nobody.user).objects.get(pk=nobody.user.pk)
    assert not can_see(fresh, event)
    assert can_see(type(seer.user).objects.get(pk=seer.user.pk), event)


# -- retention ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_purge_deletes_only_lines_past_the_retention_in_batches(
    make_bot: Callable[..., Bot], settings: Any
) -> None:
    settings.BOT_LOG_RETENTION_DAYS = 3
    bot = make_bot()
    old = [_line(bot, logging.INFO, f"old {n}", timedelta(days=3, minutes=n + 1)) for n in range(5)]
    recent = [_line(bot, logging.INFO, f"recent {n}", timedelta(days=2, hours=23, minutes=n)) for n in range(3)]
    assert logs.bot_log_purge(batch=2) == 5
    remaining = set(BotLogLine.objects.filter(bot=bot).values_list("pk", flat=True))
    assert remaining == {line.pk for line in recent}
    assert not remaining & {line.pk for line in old}
    assert logs.bot_log_purge(batch=2) == 0


@pytest.mark.django_db
def test_the_purge_runs_as_a_task_on_the_control_queue_from_beat(make_bot: Callable[..., Bot], settings: Any) -> None:
    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == bot_log_purge_task.name)
    assert entry["options"]["queue"] == "control"
    bot = make_bot()
    _line(bot, logging.INFO, "eight days old", timedelta(days=8))
    kept = _line(bot, logging.INFO, "six days old", timedelta(days=6))
    bot_log_purge_task()  # the default retention: 7 days
    assert list(BotLogLine.objects.filter(bot=bot)) == [kept]


# -- a real bot worker -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("supervisor", ["spawn_fleet", "fork_fleet"])
def test_a_real_bot_worker_stores_its_startup_lines_and_not_celerys_chatter(
    request: pytest.FixtureRequest, supervisor: str, new_key: Callable[..., Key]
) -> None:
    sup: Fleet = request.getfixturevalue(supervisor)  # spawned, or forked from the preloaded template
    key = new_key()
    account, _ = exchange_account_create(
        label="Bot logs worker",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    bot = Bot.objects.create(
        name="logging-bot",
        account=account,
        strategy="grid",
        symbols=["BTC/USDT"],
        mode="live",
        tick_interval_s=1,
        max_order_notional=100,
        max_position_notional=1000,
        daily_loss_limit=100,
        max_drawdown_pct=10,
        desired_state="running",
    )
    sup.sync_once()

    def ready() -> bool:
        sup.sync_once()
        return BotLogLine.objects.filter(bot=bot, message__contains="worker ready (vault identity)").exists()

    wait_until(ready, "the worker's startup line in the database", timeout=90)
    line = BotLogLine.objects.get(bot=bot, message__contains="worker ready")
    assert line.level == logging.INFO and line.logger == "apps.trading.runtime"
    # A few ticks go round: Celery's per-task lines (received, succeeded) are not the bot's to show.
    time.sleep(3)
    assert Bot.objects.get(pk=bot.pk).observed_state == "running"
    chatter = BotLogLine.objects.filter(bot=bot, logger__startswith="celery", level__lt=logging.WARNING)
    assert not chatter.exists(), list(chatter.values_list("message", flat=True)[:3])
    assert key.secret not in "\n".join(BotLogLine.objects.filter(bot=bot).values_list("message", flat=True))

    Bot.objects.filter(pk=bot.pk).update(desired_state="stopped")

    def stopped() -> bool:
        sup.sync_once()
        return bot.pk not in sup.workers

    wait_until(stopped, "the worker to stop", timeout=30)
    assert key.secret not in pg_dump()
