"""The panic button cannot fail open; a resume is all or nothing (issue 13, item 3).

Whatever the reason text, a press commits its halt and answers without a 5xx; whatever fails after the
halt (recording the run, the audit entry) leaves the halt in place and the page says what failed. A
malformed `bot` field halts nothing and gets a 400 (a well-formed id of no bot: 404). A resume with a
bad reason, with nothing halted, during a kill or with a worker alive changes nothing and is not audited
as a resume; a resume whose audit entry cannot be written does not happen.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.audit.services import audit_verify_chain
from apps.bots.halts import global_halt_active, global_halt_set, global_halt_state
from apps.bots.models import Bot
from apps.exchanges.services import exchange_account_create
from apps.killswitch.models import KillRun
from apps.killswitch.services import kill_request
from apps.strategies.base import OrderIntent
from apps.trading.gate import gate_check
from apps.trading.models import GateRefusal
from tests.keys import Key
from tests.killswitch.support import HOSTILE_REASONS, inserts_refused, is_clean
from tests.people import Person

pytestmark = pytest.mark.django_db

SYMBOL = "BTC/USDT"
AUDIT = AuditEntry._meta.db_table
RUNS = KillRun._meta.db_table


@pytest.fixture
def bots(new_key: Callable[..., Key]) -> list[Bot]:
    key = new_key()
    account, _ = exchange_account_create(
        label="Fail closed",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    fields: dict[str, Any] = {
        "account": account,
        "strategy": "grid",
        "symbols": [SYMBOL],
        "mode": Bot.Mode.LIVE,
        "desired_state": Bot.Desired.RUNNING,
        "max_order_notional": Decimal(1000),
        "max_position_notional": Decimal(5000),
        "daily_loss_limit": Decimal(1000),
        "max_drawdown_pct": Decimal(50),
    }
    return [Bot.objects.create(name=f"fail-closed {i}", **fields) for i in range(2)]


def gate_refuses(bot: Bot) -> str:
    """The reason the gate gives for an order of `bot` right now ("" when it would allow it)."""
    intent = OrderIntent(SYMBOL, "buy", "limit", Decimal("0.001"), Decimal("50000"), "fail-closed-probe")
    decision = gate_check(bot=Bot.objects.get(pk=bot.pk), intent=intent, price=Decimal("50000"))
    return "" if decision.allowed else decision.reason


def nothing_changed(bots: list[Bot]) -> None:
    assert not global_halt_active()
    assert not KillRun.objects.exists()
    assert not AuditEntry.objects.filter(action__in=["killswitch.pressed", "trading.halted"]).exists()
    assert set(Bot.objects.filter(pk__in=[b.pk for b in bots]).values_list("desired_state", "halted")) == {
        ("running", False)
    }


# -- the global press ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", HOSTILE_REASONS.values(), ids=HOSTILE_REASONS.keys())
def test_a_panic_press_halts_everything_whatever_the_reason_says(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot], reason: str
) -> None:
    client, _ = logged_in("operator")
    response = client.post("/killswitch/", {"reason": reason})
    run = KillRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/killswitch/runs/{run.pk}/"
    halt = global_halt_state()
    assert halt.active and is_clean(halt.reason, 300)
    assert gate_refuses(bots[0]) == GateRefusal.Reason.GLOBAL_HALT
    assert set(Bot.objects.values_list("desired_state", flat=True)) == {"stopped"}
    assert run.scope == KillRun.Scope.ALL and is_clean(run.reason, 500)
    pressed = AuditEntry.objects.get(action="killswitch.pressed")
    assert pressed.data["reason"] == run.reason and pressed.data["run"] == run.pk
    assert "\x00" not in str(pressed.data)
    assert audit_verify_chain().ok
    page = client.get(response["Location"])
    assert page.status_code == 200 and run.reason[:50] in page.content.decode()


def test_a_cleaned_reason_keeps_what_was_typed_and_notes_the_cleaning(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot]
) -> None:
    client, _ = logged_in("operator")
    client.post("/killswitch/", {"reason": "key\x00 leak\u202e on\r\nbinance"})
    assert KillRun.objects.get().reason == "key leak on binance"
    assert global_halt_state().reason == "key leak on binance"
    assert AuditEntry.objects.get(action="killswitch.pressed").data["reason_cleaned"] is True


def test_a_press_whose_run_cannot_be_recorded_keeps_the_halt_and_says_what_failed(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot]
) -> None:
    client, _ = logged_in("operator")
    with inserts_refused(RUNS):
        response = client.post("/killswitch/", {"reason": "leak"})
    assert response.status_code == 302 and response["Location"] == "/killswitch/runs/"
    assert global_halt_active() and gate_refuses(bots[1]) == GateRefusal.Reason.GLOBAL_HALT
    assert set(Bot.objects.values_list("desired_state", flat=True)) == {"stopped"}
    assert not KillRun.objects.exists()
    pressed = AuditEntry.objects.get(action="killswitch.pressed")  # the press itself is still on record
    assert pressed.data["run"] is None
    page = client.get(response["Location"]).content.decode()
    assert "The kill run could not be recorded" in page and "trading stays halted" in page


def test_a_press_whose_audit_entry_fails_keeps_the_halt_and_the_run_and_says_so(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot]
) -> None:
    client, _ = logged_in("operator")
    with inserts_refused(AUDIT, "NEW.action = 'killswitch.pressed'"):
        response = client.post("/killswitch/", {"reason": "leak"})
    run = KillRun.objects.get()
    assert response["Location"] == f"/killswitch/runs/{run.pk}/"
    assert global_halt_active() and gate_refuses(bots[0]) == GateRefusal.Reason.GLOBAL_HALT
    assert not AuditEntry.objects.filter(action="killswitch.pressed").exists()
    assert "could not be written to the audit log" in client.get(response["Location"]).content.decode()
    assert audit_verify_chain().ok


def test_a_halt_whose_own_audit_entry_fails_still_commits() -> None:
    with inserts_refused(AUDIT, "NEW.action = 'trading.halted'"):
        global_halt_set(reason="x\x00y", actor="system:test")
    assert global_halt_active() and global_halt_state().reason == "x y"


# -- a bot's emergency stop ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nul", "controls", "rtl-override", "10k", "empty"])
def test_an_emergency_stop_halts_the_bot_whatever_the_reason_says(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot], name: str
) -> None:
    client, _ = logged_in("operator")
    response = client.post("/killswitch/", {"reason": HOSTILE_REASONS[name], "bot": str(bots[0].pk)})
    run = KillRun.objects.get()
    assert response["Location"] == f"/killswitch/runs/{run.pk}/"
    target, other = (Bot.objects.get(pk=b.pk) for b in bots)
    assert target.halted and target.desired_state == "stopped" and is_clean(target.halt_reason, 300)
    assert gate_refuses(target) == GateRefusal.Reason.BOT_HALTED
    assert not other.halted and other.desired_state == "running" and not global_halt_active()
    assert run.scope == KillRun.Scope.BOT and run.bot_id == target.pk and is_clean(run.reason, 500)


def test_an_emergency_stop_whose_run_cannot_be_recorded_keeps_the_bot_halted(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot]
) -> None:
    client, _ = logged_in("operator")
    with inserts_refused(RUNS):
        response = client.post("/killswitch/", {"reason": "runaway", "bot": str(bots[0].pk)})
    assert response["Location"] == "/killswitch/runs/"
    target = Bot.objects.get(pk=bots[0].pk)
    assert target.halted and target.desired_state == "stopped"
    assert "The kill run could not be recorded" in client.get("/killswitch/runs/").content.decode()


@pytest.mark.parametrize(
    "raw", ["abc", "1 OR 1=1", "1; DROP TABLE bots_bot", "-1", "1.0", "1e3", "0x1", "\u0663", "1\x00", "9" * 30]
)
def test_a_malformed_bot_halts_nothing_and_answers_400(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot], raw: str
) -> None:
    client, _ = logged_in("operator")
    response = client.post("/killswitch/", {"reason": "runaway", "bot": raw})
    assert response.status_code == 400
    assert "given by its id" in response.content.decode()
    nothing_changed(bots)


def test_a_bot_that_does_not_exist_halts_nothing_and_answers_404(
    logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot]
) -> None:
    client, _ = logged_in("operator")
    missing = max(b.pk for b in bots) + 1000
    for raw in (str(missing), str(2**63 - 1)):
        assert client.post("/killswitch/", {"reason": "runaway", "bot": raw}).status_code == 404
    nothing_changed(bots)


def test_an_anonymous_or_viewer_press_changes_nothing(
    client: Client, logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot]
) -> None:
    assert client.post("/killswitch/", {"reason": "x\x00"})["Location"].startswith("/accounts/login/")
    viewer, _ = logged_in("viewer")
    assert viewer.post("/killswitch/", {"reason": "x\x00", "bot": "abc"}).status_code == 403
    nothing_changed(bots)


def test_kill_request_cleans_the_reason_for_circuit_breakers_and_scripts(bots: list[Bot]) -> None:
    run = kill_request(actor="system:test", reason="\x00" * 600, bot=bots[0], via="breaker-with-a-long-name")
    assert run.reason == "(no reason given)" and run.requested_via == "breaker-wi"
    assert Bot.objects.get(pk=bots[0].pk).halted


# -- resume ---------------------------------------------------------------------------------------------


@pytest.fixture
def admin(logged_in: Callable[[str], tuple[Client, Person]]) -> Client:
    client, who = logged_in("admin")
    client.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    return client


def resumed() -> int:
    return AuditEntry.objects.filter(action__in=["killswitch.resumed", "trading.resumed"]).count()


@pytest.mark.parametrize(
    ("reason", "error"),
    [
        ("fine\x00", "invisible or control character"),
        ("safe \u202enow", "invisible or control character"),
        ("ok\x1b[2J", "invisible or control character"),
        ("x" * 10_000, "under 500 characters"),
        ("   ", "Write down why"),
    ],
)
def test_a_resume_with_a_bad_reason_changes_nothing(admin: Client, bots: list[Bot], reason: str, error: str) -> None:
    global_halt_set(reason="leak", actor="system:test")
    response = admin.post("/killswitch/resume/", {"reason": reason})
    assert response.status_code == 400 and error in response.content.decode()
    assert "\x00" not in response.content.decode() and "x" * 600 not in response.content.decode()
    assert global_halt_active() and resumed() == 0


def test_nothing_to_resume_is_said_as_such_and_not_audited(admin: Client) -> None:
    response = admin.post("/killswitch/resume/", {"reason": "all good"})
    assert response.status_code == 409 and "nothing to resume" in response.content.decode()
    assert resumed() == 0


@pytest.mark.parametrize("status", [KillRun.Status.PENDING, KillRun.Status.RUNNING])
def test_a_resume_is_refused_while_a_kill_is_still_in_progress(admin: Client, bots: list[Bot], status: str) -> None:
    run = kill_request(actor="system:test", reason="leak")
    KillRun.objects.filter(pk=run.pk).update(status=status, started_at=timezone.now())
    Bot.objects.update(observed_state=Bot.Observed.STOPPED)
    response = admin.post("/killswitch/resume/", {"reason": "all good"})
    assert response.status_code == 409 and f"#{run.pk}" in response.content.decode()
    assert global_halt_active() and resumed() == 0
    KillRun.objects.filter(pk=run.pk).update(status=KillRun.Status.DONE, finished_at=timezone.now())
    assert admin.post("/killswitch/resume/", {"reason": "all good"})["Location"] == "/"
    assert not global_halt_active() and resumed() == 2


@pytest.mark.parametrize("state", [Bot.Observed.STARTING, Bot.Observed.RUNNING, Bot.Observed.STOPPING])
def test_a_resume_is_refused_while_a_bot_worker_is_alive(admin: Client, bots: list[Bot], state: str) -> None:
    global_halt_set(reason="leak", actor="system:test")
    Bot.objects.filter(pk=bots[0].pk).update(observed_state=state)
    Bot.objects.filter(pk=bots[1].pk).update(observed_state=Bot.Observed.ERROR)  # its process has exited
    response = admin.post("/killswitch/resume/", {"reason": "all good"})
    assert response.status_code == 409 and bots[0].name in response.content.decode()
    assert bots[1].name not in response.content.decode().split("still alive")[-1].split("</p>")[0]
    assert global_halt_active() and resumed() == 0
    Bot.objects.filter(pk=bots[0].pk).update(observed_state=Bot.Observed.HALTED)
    assert admin.post("/killswitch/resume/", {"reason": "all good"})["Location"] == "/"
    assert not global_halt_active()


def test_a_resume_whose_audit_entry_fails_does_not_happen(admin: Client, bots: list[Bot]) -> None:
    global_halt_set(reason="leak", actor="system:test")
    with inserts_refused(AUDIT, "NEW.action = 'killswitch.resumed'"):
        response = admin.post("/killswitch/resume/", {"reason": "all good"})
    assert response.status_code == 409 and "Nothing was changed" in response.content.decode()
    assert global_halt_active() and global_halt_state().reason == "leak" and resumed() == 0


def test_only_an_admin_with_a_fresh_code_resumes(
    client: Client, logged_in: Callable[[str], tuple[Client, Person]], bots: list[Bot]
) -> None:
    global_halt_set(reason="leak", actor="system:test")
    assert client.post("/killswitch/resume/", {"reason": "ok"})["Location"].startswith("/accounts/login/")
    operator, _ = logged_in("operator")
    assert operator.post("/killswitch/resume/", {"reason": "ok"}).status_code == 403
    admin, _ = logged_in("admin")
    assert admin.post("/killswitch/resume/", {"reason": "ok"})["Location"].startswith("/accounts/step-up/")
    assert global_halt_active() and resumed() == 0
