"""The kill report's live figures (JSON), the dashboard's kill card and the resume page's restart list."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.audit.models import AuditEntry
from apps.bots.halts import global_halt_active
from apps.bots.models import Bot
from apps.exchanges.services import exchange_account_create
from apps.killswitch.models import KillRun
from apps.killswitch.services import kill_request
from tests.keys import Key
from tests.people import Person, make_person, password_login

pytestmark = pytest.mark.django_db


@pytest.fixture
def bots(new_key: Callable[..., Key]) -> list[Bot]:
    key = new_key(ip_restrict=True)
    account, _ = exchange_account_create(
        label="Report views",
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
        for i in range(3)
    ]


def finished_run() -> KillRun:
    run = kill_request(actor="system:test", reason="drill <b>bold</b>")
    steps = [
        {"name": "stop", "ms": 8000, "at_ms": 8100, "detail": "2 bot worker(s) were running"},
        {"name": "cancel", "ms": 300, "at_ms": 400, "detail": "8 order(s) cancelled on 1 account(s)"},
        {"name": "verify", "ms": 50, "at_ms": 8500, "detail": "0 still open"},
    ]
    KillRun.objects.filter(pk=run.pk).update(
        status="done",
        started_at=run.created_at,
        finished_at=run.created_at + dt.timedelta(seconds=10),
        steps=steps,
        orders_cancelled=8,
        paper_orders_cancelled=3,
        workers_stopped=2,
        balances_after={"x": {"label": "Main", "total": {"USDT": "100"}, "reached": True}},
    )
    return KillRun.objects.get(pk=run.pk)


def test_the_report_state_is_for_every_verified_role_and_has_the_true_figures(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot]
) -> None:
    run = finished_run()
    url = f"/killswitch/runs/{run.pk}/state/"
    clients = {role: logged_in(role)[0] for role in ("viewer", "operator", "admin")}
    for client in clients.values():
        body = client.get(url).json()
        assert body["status"] == "done" and body["finished"] is True
        # Click to verified: 8.5 s, though the run finished at 10 s; the workers' stop its own figure.
        assert (body["duration_ms"], body["workers_stopped_ms"], body["workers_stopped"]) == (8500, 8100, 2)
        assert (body["orders_cancelled"], body["paper_orders_cancelled"], body["still_open_text"]) == (8, 3, "0")
        assert body["result"] == "done in 8.5 s — 8 orders cancelled (3 paper), 0 open, 2 workers stopped"
        assert [s["name"] for s in body["steps"]] == ["stop", "cancel", "verify"]
        # A run from before the free amounts were kept: its totals alone, written for people.
        assert body["balances"] == [
            {"account": "Main", "reached": True, "assets": [{"asset": "USDT", "free": "", "used": "", "total": "100"}]}
        ]
        assert [s["label"] for s in body["steps"]] == [
            "Stop bot workers",
            "Cancel orders on the exchanges",
            "Check that no order is left open",
        ]
        page = client.get(f"/killswitch/runs/{run.pk}/").content.decode()
        assert "8500 ms (from the click to verified)" in page and "2 workers, 8100 ms after the click" in page
        assert "Kill switch done in 8.5 s — 8 orders cancelled (3 paper), 0 open, 2 workers stopped" in page
        assert "drill &lt;b&gt;bold&lt;/b&gt;" in page and 'src="/static/js/kill-report.js"' in page
    assert Client().get(url)["Location"].startswith("/accounts/login/")  # anonymous
    half = Client()  # password only, no authenticator code yet
    password_login(half, make_person("half", "admin"))
    assert half.get(url).status_code == 302 and "json" not in half.get(url).get("Content-Type", "")
    assert clients["viewer"].get("/killswitch/runs/987654/state/").status_code == 404
    assert clients["viewer"].post(url).status_code == 405


def test_the_balances_after_are_a_table_of_account_asset_free_used_and_total(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot]
) -> None:
    run = finished_run()
    KillRun.objects.filter(pk=run.pk).update(
        balances_after={
            "3f2a9c1e-0000-4000-8000-000000000001": {
                "label": "Main",
                "total": {"BTC": "1.50000000", "USDT": "12345.6"},
                "free": {"BTC": "1.00000000", "USDT": "12345.6"},
                "reached": True,
            }
        }
    )
    client, _ = logged_in("viewer")
    page = client.get(f"/killswitch/runs/{run.pk}/").content.decode()
    rows = re.findall(r"<tr>(.*?)</tr>", page.split('id="run-balances"')[1].split("</tbody>")[0])
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]
    assert cells == [["Main", "BTC", "1", "0.5", "1.5"], ["Main", "USDT", "12,345.6", "0", "12,345.6"]]
    assert "3f2a9c1e" not in page and "{" not in page.split('id="run-balances"')[1].split("</tbody>")[0]
    body = client.get(f"/killswitch/runs/{run.pk}/state/").json()
    assert body["balances"][0]["assets"][0] == {"asset": "BTC", "free": "1", "used": "0.5", "total": "1.5"}


def test_a_running_report_says_so_and_an_unknown_count_is_never_zero(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot]
) -> None:
    run = kill_request(actor="system:test", reason="t")
    client, _ = logged_in("viewer")
    body = client.get(f"/killswitch/runs/{run.pk}/state/").json()
    assert (body["status"], body["finished"], body["duration_ms"], body["still_open_text"]) == (
        "pending",
        False,
        None,
        "not checked yet",
    )
    KillRun.objects.filter(pk=run.pk).update(
        status="failed",
        finished_at=run.created_at,
        open_unknown=True,
        balances_after={"x": {"label": "Main", "total": {}, "reached": False, "still_open": None}},
        problems=["Main: not verified: its open orders are unknown"],
    )
    body = client.get(f"/killswitch/runs/{run.pk}/state/").json()
    assert body["still_open_text"].startswith("unknown") and "open orders unknown" in body["result"]
    assert body["result"].startswith("failed") and body["balances"][0]["reached"] is False
    page = client.get(f"/killswitch/runs/{run.pk}/").content.decode()
    assert "not reached: open orders and balances unknown" in page


def test_the_dashboard_kill_card_holds_the_panic_button_and_the_halt_state(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot]
) -> None:
    operator, _ = logged_in("operator")
    page = operator.get("/").content.decode()
    assert "The panic button arrives" not in page
    assert "Trading is allowed: no halt is in place." in page
    assert 'id="dash-kill-reason"' in page and "Kill switch: halt everything now" in page
    viewer, _ = logged_in("viewer")
    page = viewer.get("/").content.decode()
    assert 'id="dash-kill-reason"' not in page and "Only operators and admins can press the kill switch." in page

    # The card's button is the same POST as the header's.
    response = operator.post("/killswitch/", {"reason": "from the dashboard card"})
    run = KillRun.objects.get()
    assert response["Location"] == f"/killswitch/runs/{run.pk}/" and global_halt_active()
    page = operator.get("/").content.decode()
    assert "Trading is halted for every bot" in page and "from the dashboard card" in page
    assert f'href="/killswitch/runs/{run.pk}/"' in page
    admin, _ = logged_in("admin")
    assert "restart the 3 bots the kill stopped" in admin.get("/").content.decode()
    assert Client().get("/")["Location"].startswith("/accounts/login/")


def test_the_resume_page_lists_the_stopped_bots_checked_and_starts_only_those_left_checked(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot], settings: Any
) -> None:
    run = kill_request(actor="system:test", reason="drill")
    KillRun.objects.filter(pk=run.pk).update(status="done", finished_at=run.created_at)
    Bot.objects.filter(pk=bots[2].pk).update(archived_at=run.created_at)  # archived since: not offered
    operator, _ = logged_in("operator")
    assert operator.get("/killswitch/resume/").status_code == 403
    admin, who = logged_in("admin")
    admin.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    page = admin.get("/killswitch/resume/").content.decode()
    assert "Restart the 2 bots that were running" in page
    for bot in bots[:2]:
        assert f'name="restart" value="{bot.pk}" checked' in page
    assert f'value="{bots[2].pk}"' not in page

    bad = admin.post("/killswitch/resume/", {"reason": "ok", "restart": ["1 OR 1=1"]})
    assert bad.status_code == 400 and global_halt_active()
    stranger = admin.post("/killswitch/resume/", {"reason": "ok", "restart": [str(bots[2].pk)]})
    assert stranger.status_code == 400 and global_halt_active()
    assert "not stopped by this halt" in stranger.content.decode()

    done = admin.post("/killswitch/resume/", {"reason": "drill over", "restart": [str(bots[0].pk)]})
    assert done["Location"] == "/" and not global_halt_active()
    assert dict(Bot.objects.values_list("pk", "desired_state")) == {
        bots[0].pk: "running",
        bots[1].pk: "stopped",
        bots[2].pk: "stopped",
    }
    assert AuditEntry.objects.filter(action="bot.start_requested", target_id=str(bots[0].pk)).count() == 1
    messages = admin.get("/").content.decode()
    assert "Started again: bot 0" in messages


def test_a_bot_that_may_not_start_again_is_named_on_the_page_after_the_resume(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot]
) -> None:
    run = kill_request(actor="system:test", reason="drill")
    KillRun.objects.filter(pk=run.pk).update(status="done", finished_at=run.created_at)
    Bot.objects.filter(pk=bots[1].pk).update(halted=True, halt_reason="daily loss")  # halted on its own since
    admin, who = logged_in("admin")
    admin.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    restart = [str(b.pk) for b in bots]
    response = admin.post("/killswitch/resume/", {"reason": "drill over", "restart": restart}, follow=True)
    page = response.content.decode()
    assert not global_halt_active()
    assert "Started again: bot 0, bot 2." in page
    assert "bot 1 was not started again: bot 1 is halted (daily loss)" in page
    assert Bot.objects.get(pk=bots[1].pk).desired_state == "stopped"
    resumed = AuditEntry.objects.get(action="killswitch.resumed")
    assert list(resumed.data["not_restarted"]) == [str(bots[1].pk)]
