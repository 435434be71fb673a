"""Every audit entry a person causes carries that person's OTP verification and address, wherever it is written."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable

import pytest
from django.test import Client

from apps.audit.context import Via, acting_via, current_via
from apps.audit.models import AuditEntry
from apps.audit.services import record
from apps.bots.halts import global_halt_active
from apps.bots.models import TradingHalt
from apps.killswitch.models import KillRun
from tests.people import Person

pytestmark = pytest.mark.django_db


def _entries(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action))


def test_a_kill_and_a_resume_by_a_verified_admin_are_recorded_as_verified_with_the_address(
    logged_in: Callable[[str], tuple[Client, Person]],
) -> None:
    admin, who = logged_in("admin")
    assert admin.post("/killswitch/", {"reason": "drill"}).status_code == 302
    assert global_halt_active()
    # The halt row is written by the bots app without the request in hand: it still knows who pressed.
    for action in ("trading.halted", "killswitch.pressed"):
        (entry,) = _entries(action)
        assert (entry.actor, entry.otp_verified, entry.ip) == (who.user.username, True, "127.0.0.1"), action

    # The control worker's run is tested in tests/killswitch; here it is over, so a resume is allowed.
    KillRun.objects.update(status=KillRun.Status.DONE)
    admin.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    assert admin.post("/killswitch/resume/", {"reason": "drill over"}).status_code == 302
    assert not global_halt_active()
    for action in ("trading.resumed", "killswitch.resumed"):
        (entry,) = _entries(action)
        assert (entry.actor, entry.otp_verified, entry.ip) == (who.user.username, True, "127.0.0.1"), action


def test_work_finished_in_a_thread_on_a_persons_behalf_keeps_their_verification(
    logged_in: Callable[[str], tuple[Client, Person]],
) -> None:
    _, who = logged_in("admin")
    via = Via(ip="192.0.2.7", otp_verified=True, user_id=who.user.pk)
    seen: list[Via | None] = []
    with acting_via(via):
        context = contextvars.copy_context()
    # The thread only reads who it acts for: writing the entry there would wait on this test's
    # transaction, which holds the audit chain's lock until the test ends.
    thread = threading.Thread(target=context.run, args=(lambda: seen.append(current_via()),))
    thread.start()
    thread.join()
    assert seen == [via]
    with acting_via(seen[0]):
        record(actor=who.user, action="test.in_thread", target=TradingHalt.objects.first())
    (entry,) = _entries("test.in_thread")
    assert (entry.otp_verified, entry.ip) == (True, "192.0.2.7")
    assert current_via() is None  # nothing leaks out of the block


def test_a_via_vouches_only_for_its_own_person(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    _, admin = logged_in("admin")
    _, operator = logged_in("operator")
    via = Via(ip="192.0.2.7", otp_verified=True, user_id=admin.user.pk)
    with acting_via(via):
        record(actor=operator.user, action="test.other_person")
        record(actor="system:test", action="test.system")
    assert [(e.otp_verified, e.ip) for e in _entries("test.other_person")] == [(False, None)]
    assert [(e.otp_verified, e.ip) for e in _entries("test.system")] == [(False, None)]


def test_a_via_read_back_from_json_refuses_what_is_not_its_shape() -> None:
    assert Via.from_dict({"ip": "192.0.2.1", "otp_verified": True, "user_id": 3}) == Via("192.0.2.1", True, 3)
    assert Via.from_dict({"ip": 5, "otp_verified": "yes", "user_id": "3"}) == Via(None, False, None)
    assert Via.from_dict("nonsense") is None
