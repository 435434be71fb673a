"""Archiving a bot: only a stopped bot with no open orders; then out of the lists, not startable, not editable."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.bots.services import bot_archive, bot_set_flatten_on_kill, bot_start
from apps.core.exceptions import ApplicationError
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_create
from apps.trading.models import Order
from apps.trading.selectors import bot_open_order_count, bot_rows
from tests.keys import Key
from tests.people import Person

pytestmark = pytest.mark.django_db
LoggedIn = Callable[[str], tuple[Client, Person]]


@pytest.fixture
def account(new_key: Callable[..., Key]) -> ExchangeAccount:
    acct, _ = exchange_account_create(
        label="Shelf account",
        exchange_id="sandbox",
        credentials=new_key().form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    return acct


@pytest.fixture
def make_bot(account: ExchangeAccount) -> Callable[..., Bot]:
    def make(name: str, **fields: Any) -> Bot:
        return Bot.objects.create(
            name=name,
            account=account,
            strategy="grid",
            params={"lower": "20000", "upper": "40000", "levels": 10, "order_amount": "0.001"},
            symbols=["BTC/USDT"],
            max_order_notional=Decimal("100"),
            max_position_notional=Decimal("1000"),
            daily_loss_limit=Decimal("100"),
            max_drawdown_pct=Decimal("10"),
            **fields,
        )

    return make


def open_order(bot: Bot, status: str = "open") -> Order:
    return Order.objects.create(
        bot=bot,
        account=bot.account,
        symbol="BTC/USDT",
        side="buy",
        type="limit",
        amount=Decimal("0.001"),
        price=Decimal("30000"),
        client_order_id=f"bc-test-{bot.pk}-{Order.objects.count()}",
        intent_tag="test",
        status=status,
    )


def test_an_operator_archives_a_stopped_bot_audited_and_it_leaves_the_lists(
    logged_in: LoggedIn, make_bot: Callable[..., Bot]
) -> None:
    old = make_bot("old grid")
    make_bot("kept grid")
    open_order(old, status="filled")  # closed orders do not keep a bot from being archived
    client, who = logged_in("operator")
    response = client.post(f"/bots/{old.pk}/archive/", follow=True)
    assert "old grid archived" in response.content.decode()
    old.refresh_from_db()
    assert old.archived_at is not None
    entry = AuditEntry.objects.get(action="bot.archived")
    assert entry.target_id == str(old.pk) and entry.actor == who.user.username and entry.otp_verified

    listed = client.get("/bots/").content.decode()
    assert "kept grid" in listed and "old grid" not in listed and "Show archived bots (1)" in listed
    archived = client.get("/bots/?archived=1").content.decode()
    assert "old grid" in archived and "kept grid" not in archived and '<span class="badge">archived</span>' in archived
    assert 'name="bot"' not in archived  # no fleet checkboxes for archived bots
    assert [row["bot"].name for row in bot_rows()] == ["kept grid"]
    assert "old grid" not in client.get("/").content.decode()  # the dashboard lists no archived bot
    page = client.get(f"/bots/{old.pk}/").content.decode()  # its page stays, for the record
    assert "Archived on" in page and ">Start<" not in page and ">Edit<" not in page


def test_an_archived_bot_cannot_be_started_by_any_path(logged_in: LoggedIn, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot("old grid", archived_at=timezone.now())
    client, _ = logged_in("operator")
    single = client.post(f"/bots/{bot.pk}/start/", follow=True).content.decode()
    assert "old grid is archived: an admin must unarchive it before it can start." in single
    fleet = client.post("/bots/fleet/", {"action": "start", "bot": [bot.pk]}, follow=True).content.decode()
    assert "old grid: refused: old grid is archived" in fleet
    with pytest.raises(ApplicationError, match="archived"):
        bot_start(bot=bot, actor="system:test")
    assert Bot.objects.get().desired_state == "stopped"
    assert not AuditEntry.objects.filter(action="bot.start_requested").exists()


def test_a_start_with_a_stale_copy_is_refused_once_the_bot_is_archived(make_bot: Callable[..., Bot]) -> None:
    bot = make_bot("old grid")
    stale = Bot.objects.get(pk=bot.pk)  # loaded before the archive, as a page would have been
    bot_archive(bot=bot, actor="system:test", open_orders=bot_open_order_count)
    with pytest.raises(ApplicationError, match="archived"):
        bot_start(bot=stale, actor="system:test")
    assert Bot.objects.get().desired_state == "stopped"


def test_an_archived_bot_cannot_be_edited(logged_in: LoggedIn, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot("old grid", archived_at=timezone.now())
    client, _ = logged_in("operator")
    shown = client.get(f"/bots/{bot.pk}/edit/")
    assert shown.status_code == 302 and shown["Location"] == f"/bots/{bot.pk}/"
    posted = client.post(f"/bots/{bot.pk}/edit/?strategy=grid", {"name": "renamed"}, follow=True)
    assert "old grid is archived: an admin must unarchive it before it can be edited." in posted.content.decode()
    switched = client.post(f"/bots/{bot.pk}/paper/", follow=True).content.decode()
    assert "old grid is archived" in switched
    assert Bot.objects.get().name == "old grid"
    assert not AuditEntry.objects.filter(action__in=["bot.updated", "bot.mode_changed"]).exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"desired_state": "running", "observed_state": "running"}, "Only a stopped bot can be archived: stop"),
        ({"desired_state": "stopped", "observed_state": "stopping"}, "wait until it has stopped (now stopping"),
        ({"desired_state": "running", "observed_state": "stopped"}, "Only a stopped bot can be archived"),
    ],
)
def test_a_bot_that_is_not_stopped_cannot_be_archived(
    logged_in: LoggedIn, make_bot: Callable[..., Bot], fields: dict[str, str], message: str
) -> None:
    bot = make_bot("busy grid", **fields)
    client, _ = logged_in("operator")
    page = client.post(f"/bots/{bot.pk}/archive/", follow=True).content.decode()
    assert message in page
    assert Bot.objects.get().archived_at is None
    assert not AuditEntry.objects.filter(action="bot.archived").exists()


def test_a_bot_with_open_orders_cannot_be_archived(logged_in: LoggedIn, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot("resting grid")
    open_order(bot, status="open")
    open_order(bot, status="partially_filled")
    client, _ = logged_in("operator")
    page = client.post(f"/bots/{bot.pk}/archive/", follow=True).content.decode()
    assert "resting grid still has 2 open orders: cancel them before archiving." in page
    assert Bot.objects.get().archived_at is None
    assert not AuditEntry.objects.filter(action="bot.archived").exists()


def test_archiving_twice_says_so(make_bot: Callable[..., Bot]) -> None:
    bot = make_bot("old grid", archived_at=timezone.now())
    with pytest.raises(ApplicationError, match="already archived"):
        bot_archive(bot=bot, actor="system:test", open_orders=bot_open_order_count)


def test_a_viewer_cannot_archive_and_an_anonymous_user_is_sent_to_log_in(
    logged_in: LoggedIn, make_bot: Callable[..., Bot]
) -> None:
    bot = make_bot("old grid")
    viewer, _ = logged_in("viewer")
    assert viewer.post(f"/bots/{bot.pk}/archive/").status_code == 403
    assert "/archive/" not in viewer.get(f"/bots/{bot.pk}/").content.decode()
    anonymous = Client().post(f"/bots/{bot.pk}/archive/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    assert Bot.objects.get().archived_at is None
    assert not AuditEntry.objects.filter(action="bot.archived").exists()


def test_only_an_admin_unarchives_audited_and_the_bot_stays_stopped(
    logged_in: LoggedIn, make_bot: Callable[..., Bot]
) -> None:
    bot = make_bot("old grid", archived_at=timezone.now())
    operator, _ = logged_in("operator")
    assert operator.post(f"/bots/{bot.pk}/unarchive/").status_code == 403
    assert "Unarchive" not in operator.get(f"/bots/{bot.pk}/").content.decode()
    assert Bot.objects.get().archived_at is not None
    assert Client().post(f"/bots/{bot.pk}/unarchive/").status_code == 302  # to the login page
    assert Bot.objects.get().archived_at is not None

    admin, who = logged_in("admin")
    assert "Unarchive" in admin.get(f"/bots/{bot.pk}/").content.decode()
    page = admin.post(f"/bots/{bot.pk}/unarchive/", follow=True).content.decode()
    assert "old grid unarchived (stopped)." in page
    restored = Bot.objects.get()
    assert restored.archived_at is None and restored.desired_state == "stopped"
    entry = AuditEntry.objects.get(action="bot.unarchived")
    assert entry.target_id == str(bot.pk) and entry.actor == who.user.username
    again = admin.post(f"/bots/{bot.pk}/unarchive/", follow=True).content.decode()
    assert "old grid is not archived." in again
    assert AuditEntry.objects.filter(action="bot.unarchived").count() == 1


def test_archiving_an_unknown_bot_is_a_404(logged_in: LoggedIn) -> None:
    client, _ = logged_in("operator")
    assert client.post("/bots/424242/archive/").status_code == 404
    assert client.post("/bots/424242/unarchive/").status_code == 403  # an operator may not unarchive at all


@pytest.mark.parametrize("bot_id", ["99999999999999999999999", str(2**63)])
def test_a_bot_id_beyond_the_column_is_a_404(logged_in: LoggedIn, bot_id: str) -> None:
    admin, _ = logged_in("admin")
    assert admin.post(f"/bots/{bot_id}/archive/").status_code == 404
    assert admin.post(f"/bots/{bot_id}/unarchive/").status_code == 404


def test_what_a_kill_does_with_an_archived_bot_cannot_be_changed(
    logged_in: LoggedIn, make_bot: Callable[..., Bot]
) -> None:
    bot = make_bot("old grid", archived_at=timezone.now())
    _, who = logged_in("admin")
    with pytest.raises(ApplicationError, match="old grid is archived"):
        bot_set_flatten_on_kill(bot=bot, flatten=True, actor=who.user)
    assert Bot.objects.get().flatten_on_kill is False
