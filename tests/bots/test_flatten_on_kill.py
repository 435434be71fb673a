"""Flatten on kill: a per-bot setting only an admin changes, with a fresh TOTP code, audited."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from django.test import Client

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.bots.services import bot_set_flatten_on_kill
from apps.core.exceptions import ApplicationError
from apps.exchanges.services import exchange_account_create
from tests.keys import Key
from tests.people import Person

pytestmark = pytest.mark.django_db


@pytest.fixture
def bot(new_key: Callable[..., Key]) -> Bot:
    acct, _ = exchange_account_create(
        label="Flatten account",
        exchange_id="sandbox",
        credentials=new_key().form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    return Bot.objects.create(
        name="flatten-bot",
        account=acct,
        strategy="grid",
        symbols=["BTC/USDT"],
        mode=Bot.Mode.LIVE,
        max_order_notional=Decimal("100"),
        max_position_notional=Decimal("1000"),
        daily_loss_limit=Decimal("100"),
        max_drawdown_pct=Decimal("10"),
    )


def flatten(bot: Bot) -> bool:
    return bool(Bot.objects.values_list("flatten_on_kill", flat=True).get(pk=bot.pk))


def test_it_is_off_by_default(bot: Bot) -> None:
    assert bot.flatten_on_kill is False


def test_an_admin_turns_it_on_after_a_fresh_code_and_it_is_audited(
    logged_in: Callable[[str], tuple[Client, Person]], bot: Bot
) -> None:
    admin, who = logged_in("admin")
    page = admin.get(f"/bots/{bot.pk}/edit/").content.decode()
    assert "leaves</strong> this bot's position" in page and f"/bots/{bot.pk}/flatten-on-kill/" in page

    # Without a fresh code: sent to step-up, nothing changes.
    response = admin.post(f"/bots/{bot.pk}/flatten-on-kill/", {"flatten_on_kill": "on"})
    assert response["Location"].startswith("/accounts/step-up/")
    assert not flatten(bot)

    admin.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    response = admin.post(f"/bots/{bot.pk}/flatten-on-kill/", {"flatten_on_kill": "on"})
    assert response.status_code == 302 and flatten(bot)
    entry = AuditEntry.objects.get(action="bot.flatten_on_kill_changed")
    assert entry.actor_user == who.user
    assert entry.data == {"before": {"flatten_on_kill": False}, "after": {"flatten_on_kill": True}}
    assert "market-sells</strong> this bot's position" in admin.get(f"/bots/{bot.pk}/edit/").content.decode()

    admin.post(f"/bots/{bot.pk}/flatten-on-kill/", {"flatten_on_kill": "off"})
    assert not flatten(bot)
    assert AuditEntry.objects.filter(action="bot.flatten_on_kill_changed").count() == 2


def test_bad_input_gets_a_clear_error_and_changes_nothing(
    logged_in: Callable[[str], tuple[Client, Person]], bot: Bot
) -> None:
    admin, who = logged_in("admin")
    admin.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    for data in ({"flatten_on_kill": "yes please"}, {}):
        response = admin.post(f"/bots/{bot.pk}/flatten-on-kill/", data, follow=True)
        assert "Choose whether the kill switch sells the bot&#x27;s position or leaves it" in response.content.decode()
    assert not flatten(bot)
    assert not AuditEntry.objects.filter(action="bot.flatten_on_kill_changed").exists()


def test_an_operator_sees_it_but_cannot_change_it_and_an_anonymous_user_is_sent_to_log_in(
    logged_in: Callable[[str], tuple[Client, Person]], bot: Bot
) -> None:
    operator, who = logged_in("operator")
    page = operator.get(f"/bots/{bot.pk}/edit/").content.decode()
    assert "Only an admin can change this." in page and "/flatten-on-kill/" not in page
    assert operator.post(f"/bots/{bot.pk}/flatten-on-kill/", {"flatten_on_kill": "on"}).status_code == 403
    assert Client().post(f"/bots/{bot.pk}/flatten-on-kill/", {"flatten_on_kill": "on"}).status_code == 302
    assert not flatten(bot)
    with pytest.raises(ApplicationError, match="Only an admin"):
        bot_set_flatten_on_kill(bot=bot, flatten=True, actor=who.user)
    assert not flatten(bot)
