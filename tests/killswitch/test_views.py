from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.audit.models import AuditEntry
from apps.bots.halts import global_halt_active, global_halt_set
from apps.bots.models import Bot
from apps.exchanges.services import exchange_account_create
from apps.killswitch.models import KillRun
from tests.keys import Key
from tests.people import Person

pytestmark = pytest.mark.django_db


@pytest.fixture
def bots(new_key: Callable[..., Key]) -> list[Bot]:
    key = new_key(ip_restrict=True)
    account, _ = exchange_account_create(
        label="Kill views",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    return [
        Bot.objects.create(
            name=f"bot {i}",
            account=account,
            strategy="grid",
            symbols=["BTC/USDT"],
            desired_state="running",
            max_order_notional=Decimal(100),
            max_position_notional=Decimal(1000),
            daily_loss_limit=Decimal(100),
            max_drawdown_pct=Decimal(10),
        )
        for i in range(2)
    ]


def test_the_panic_button_is_on_every_page_for_operators_only(
    logged_in: Callable[[str], tuple[Client, Person]],
) -> None:
    operator, _ = logged_in("operator")
    for url in ["/", "/bots/", "/exchange-accounts/", "/accounts/sessions/"]:
        assert "Confirm: halt everything now" in operator.get(url).content.decode(), url
    viewer, _ = logged_in("viewer")
    assert "Confirm: halt everything now" not in viewer.get("/").content.decode()


def test_an_operator_halts_everything_first_and_it_is_audited(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot]
) -> None:
    client, _ = logged_in("operator")
    response = client.post("/killswitch/", {"reason": "suspected key leak"})
    run = KillRun.objects.get()
    assert response["Location"] == f"/killswitch/runs/{run.pk}/"
    assert global_halt_active()
    assert set(Bot.objects.values_list("desired_state", flat=True)) == {"stopped"}
    entry = AuditEntry.objects.get(action="killswitch.pressed")
    assert entry.actor == "operator-user" and entry.otp_verified and entry.data["reason"] == "suspected key leak"
    page = client.get(response["Location"]).content.decode()
    assert "suspected key leak" in page and "Trading is halted" in page


def test_a_kill_without_a_reason_still_halts_everything(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot]
) -> None:
    client, _ = logged_in("operator")
    response = client.post("/killswitch/", {"reason": "  "}, HTTP_REFERER="/")
    run = KillRun.objects.get()
    assert response["Location"] == f"/killswitch/runs/{run.pk}/"
    assert global_halt_active() and run.reason == "(no reason given)"
    assert set(Bot.objects.values_list("desired_state", flat=True)) == {"stopped"}


def test_a_viewer_cannot_press_it(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    client, _ = logged_in("viewer")
    assert client.post("/killswitch/", {"reason": "x"}).status_code == 403
    assert not global_halt_active()


def test_an_emergency_stop_for_one_bot_halts_only_that_bot(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot]
) -> None:
    client, _ = logged_in("operator")
    client.post("/killswitch/", {"reason": "misbehaving", "bot": str(bots[0].pk)})
    first, second = (Bot.objects.get(pk=b.pk) for b in bots)
    assert first.halted and first.desired_state == "stopped"
    assert not second.halted and second.desired_state == "running"
    assert not global_halt_active()
    assert KillRun.objects.get().scope == "bot"


def test_resume_needs_an_admin_a_fresh_code_and_a_reason(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot], settings: Any
) -> None:
    global_halt_set(reason="test", actor="system:test")
    Bot.objects.update(desired_state="stopped")
    operator, _ = logged_in("operator")
    assert operator.post("/killswitch/resume/", {"reason": "fine"}).status_code == 403
    admin, who = logged_in("admin")
    assert admin.post("/killswitch/resume/", {"reason": "fine"})["Location"].startswith("/accounts/step-up/")
    assert global_halt_active()
    admin.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    empty = admin.post("/killswitch/resume/", {"reason": ""})
    assert empty.status_code == 400 and global_halt_active()
    assert admin.post("/killswitch/resume/", {"reason": "key rotated, audit reviewed"})["Location"] == "/"
    assert not global_halt_active()
    assert set(Bot.objects.values_list("desired_state", flat=True)) == {"stopped"}  # bots stay stopped
    assert AuditEntry.objects.filter(action="killswitch.resumed", data__reason="key rotated, audit reviewed").exists()
