"""The audit list suggests the actions it holds (and their prefixes) and links each target to its page."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from django.test import Client

from apps.audit.selectors import audit_action_names
from apps.audit.services import record
from apps.bots.models import Bot
from apps.exchanges.services import exchange_account_create
from tests.keys import Key
from tests.people import Person

pytestmark = pytest.mark.django_db


def test_the_suggestions_are_every_distinct_action_and_each_prefix() -> None:
    for action in ("bot.created", "bot.updated", "bot.created", "killswitch.pressed", "login"):
        record(actor="system:test", action=action)
    names = audit_action_names()
    assert names[: names.index("bot.created")] == sorted(
        {"bot.*", "killswitch.*"} | {n for n in names if n.endswith(".*")}
    )
    assert {"bot.created", "bot.updated", "killswitch.pressed", "login", "bot.*", "killswitch.*"} <= set(names)
    assert len(names) == len(set(names))  # each once, however often it was written


def test_the_list_links_targets_to_their_pages_and_offers_the_suggestions(
    logged_in: Callable[[str], tuple[Client, Person]], new_key: Callable[..., Key]
) -> None:
    account, _ = exchange_account_create(
        label="Audit links",
        exchange_id="sandbox",
        credentials=new_key().form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    bot = Bot.objects.create(
        name="linked",
        account=account,
        strategy="grid",
        symbols=["BTC/USDT"],
        max_order_notional=Decimal(100),
        max_position_notional=Decimal(1000),
        daily_loss_limit=Decimal(100),
        max_drawdown_pct=Decimal(10),
    )
    record(actor="system:test", action="bot.touched", target=bot)
    record(actor="system:test", action="odd.target", target=("bots.bot", "not-a-number"))
    viewer, _ = logged_in("viewer")
    page = viewer.get("/audit/").content.decode()
    assert f'<a href="/bots/{bot.pk}/">bots.bot:{bot.pk}</a>' in page
    assert "bots.bot:not-a-number" in page and 'href="/bots/not-a-number/"' not in page
    assert 'list="audit-actions"' in page and '<option value="bot.*">' in page
    assert viewer.get("/audit/", {"action": "bot.*"}).status_code == 200
