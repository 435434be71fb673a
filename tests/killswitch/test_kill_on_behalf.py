"""What the control worker finishes on a person's behalf names that person as verified; a per-bot stop says who."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.killswitch.models import KillRun
from apps.killswitch.runner import kill_execute
from apps.vault import client as vault
from tests.killswitch.test_engine import Trader, open_orders, rest_orders, traders  # noqa: F401 - fixture
from tests.people import Person

pytestmark = pytest.mark.django_db


def test_the_finished_kill_names_the_verified_person_who_pressed_it(
    logged_in: Callable[[str], tuple[Client, Person]],
    traders: Callable[[int], list[Trader]],  # noqa: F811
    control_vault: vault.ProcessVault,
    sandbox: object,
) -> None:
    (trader,) = traders(1)
    rest_orders([trader], 2)
    operator, who = logged_in("operator")
    assert operator.post("/killswitch/", {"reason": "drill"}).status_code == 302
    run = kill_execute(run_id=KillRun.objects.get().pk, process_vault=control_vault)
    assert run.status == KillRun.Status.DONE, run.problems
    assert open_orders(sandbox, trader) == []
    finished = AuditEntry.objects.get(action="killswitch.finished")
    assert finished.actor.startswith("system:")  # the control worker wrote it ...
    pressed = finished.data["pressed_by"]  # ... on behalf of the person, as their press was recorded
    assert (pressed["actor"], pressed["otp_verified"], pressed["ip"]) == (who.user.username, True, "127.0.0.1")
    assert pressed["seq"] == AuditEntry.objects.get(action="killswitch.pressed").seq
    # The report page's figures (seen by viewers too) carry no address.
    viewer, _ = logged_in("viewer")
    assert "127.0.0.1" not in viewer.get(f"/killswitch/runs/{run.pk}/state/").content.decode()


def test_an_emergency_stop_of_one_bot_shows_who_stopped_it_until_an_admin_clears_it(
    logged_in: Callable[[str], tuple[Client, Person]],
    traders: Callable[[int], list[Trader]],  # noqa: F811
) -> None:
    (trader,) = traders(1)
    operator, who = logged_in("operator")
    operator.post("/killswitch/", {"reason": "odd fills", "bot": trader.bot.pk})
    bot = Bot.objects.get(pk=trader.bot.pk)
    assert bot.halted and bot.halt_kind == Bot.HaltKind.EMERGENCY and who.user.username in bot.halted_by
    assert bot.halted_at is not None and "odd fills" in bot.halt_data["stop_reason"]
    page = operator.get(f"/bots/{bot.pk}/").content.decode()
    assert "Halted: Emergency stop" in page and "An admin clears the halt here" in page
    dashboard = operator.get("/").content.decode()
    assert "Bots halted on their own (1)" in dashboard and bot.name in dashboard
    # A second stop keeps the first halt's details.
    admin, _ = logged_in("admin")
    admin.post("/killswitch/", {"reason": "again", "bot": bot.pk})
    bot.refresh_from_db()
    assert who.user.username in bot.halted_by
