"""Acknowledging alerts: who may, what is stored and audited, what bad input does, and the count in the menu."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.test import Client

from apps.alerts.models import Alert
from apps.alerts.services import alert_raise
from apps.audit.models import AuditEntry
from tests.people import Person, make_person, password_login

pytestmark = pytest.mark.django_db
LoggedIn = Callable[[str], tuple[Client, Person]]
NAV_COUNT = re.compile(r'id="nav-alerts-count"[^>]*>.*?(\d+)<span class="visually-hidden"> unacknowledged\)', re.S)


def trading_alert(message: str = "Breaker tripped on Grid one: drawdown 12% from peak") -> Alert:
    return alert_raise(kind="breaker_tripped", message=message, severity=Alert.Severity.CRITICAL, mail=False)


def security_alert() -> Alert:
    return alert_raise(kind="key_check_failed", message="Key of Main account can withdraw", mail=False)


def nav_count(client: Client) -> int:
    """The unacknowledged count the main menu shows on the dashboard (0 when it shows none)."""
    page = client.get("/").content.decode()
    assert 'href="/alerts/"' in page, page[:3000]
    found = NAV_COUNT.search(page)
    return int(found.group(1)) if found else 0


def acks() -> int:
    return AuditEntry.objects.filter(action="alert.acknowledged").count()


def test_an_operator_acknowledges_an_alert_with_a_note_and_it_is_audited(logged_in: LoggedIn) -> None:
    client, who = logged_in("operator")
    alert = trading_alert()
    response = client.post(f"/alerts/{alert.pk}/acknowledge/", {"note": "  Looked at it; drawdown expected  "})
    assert response.status_code == 302 and response["Location"] == "/alerts/"
    alert.refresh_from_db()
    assert alert.acknowledged_by == who.user and alert.acknowledged_at is not None
    assert alert.ack_note == "Looked at it; drawdown expected"
    entry = AuditEntry.objects.get(action="alert.acknowledged")
    assert entry.actor_user == who.user and entry.otp_verified
    assert (entry.target_type, entry.target_id) == ("alerts.alert", str(alert.pk))
    assert entry.data["note"] == "Looked at it; drawdown expected" and entry.data["kind"] == "breaker_tripped"
    page = client.get("/alerts/").content.decode()
    assert f"Alert #{alert.pk} acknowledged." in page
    assert "by operator-user" in page and "Looked at it; drawdown expected" in page


def test_a_viewer_acknowledges_what_they_see_but_not_a_security_alert(logged_in: LoggedIn) -> None:
    viewer, who = logged_in("viewer")
    trading, security = trading_alert(), security_alert()
    assert viewer.post(f"/alerts/{trading.pk}/acknowledge/", {"note": ""}).status_code == 302
    trading.refresh_from_db()
    assert trading.acknowledged_by == who.user and trading.ack_note == ""
    # Security alerts are for admins: to a viewer the alert does not exist.
    assert viewer.post(f"/alerts/{security.pk}/acknowledge/", {"note": "x"}).status_code == 404
    security.refresh_from_db()
    assert security.acknowledged_at is None and acks() == 1
    admin, boss = logged_in("admin")
    assert admin.post(f"/alerts/{security.pk}/acknowledge/", {"note": "rotating the key"}).status_code == 302
    security.refresh_from_db()
    assert security.acknowledged_by == boss.user and acks() == 2


def test_an_anonymous_or_password_only_user_cannot_acknowledge(logged_in: LoggedIn) -> None:
    alert = trading_alert()
    anonymous = Client().post(f"/alerts/{alert.pk}/acknowledge/", {"note": "x"})
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    half = Client()
    password_login(half, make_person("half-in", "admin"))  # a password, no authenticator code yet
    response = half.post(f"/alerts/{alert.pk}/acknowledge/", {"note": "x"})
    assert response.status_code == 302 and response["Location"] == "/accounts/otp/"
    alert.refresh_from_db()
    assert alert.acknowledged_at is None and acks() == 0


def test_it_acknowledges_only_by_post_with_a_csrf_token(logged_in: LoggedIn) -> None:
    client, _ = logged_in("operator")
    alert = trading_alert()
    assert client.get(f"/alerts/{alert.pk}/acknowledge/").status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.cookies = client.cookies
    assert strict.post(f"/alerts/{alert.pk}/acknowledge/", {"note": "x"}).status_code == 403
    alert.refresh_from_db()
    assert alert.acknowledged_at is None and acks() == 0


@pytest.mark.parametrize(
    ("note", "error"),
    [
        ("nul\x00byte", "Null characters are not allowed"),
        ("bell\x07", "control or text-direction character"),
        ("two\nlines", "control or text-direction character"),
        ("evil\u202egnp.exe", "control or text-direction character"),
        ("n" * 501, "Keep the note to 500 characters (it has 501)"),
    ],
)
def test_it_refuses_a_bad_note_clearly_and_changes_nothing(logged_in: LoggedIn, note: str, error: str) -> None:
    client, _ = logged_in("operator")
    alert = trading_alert()
    response = client.post(f"/alerts/{alert.pk}/acknowledge/", {"note": note})
    body = response.content.decode()
    assert response.status_code == 400 and error in body, body[-3000:]
    assert f'id="note-{alert.pk}-error"' in body
    alert.refresh_from_db()
    assert alert.acknowledged_at is None and alert.acknowledged_by is None and alert.ack_note == ""
    assert acks() == 0


@pytest.mark.parametrize("alert_id", ["999999", "99999999999999999999999"])
def test_an_unknown_alert_is_404_and_changes_nothing(logged_in: LoggedIn, alert_id: str) -> None:
    client, _ = logged_in("operator")
    trading_alert()
    assert client.post(f"/alerts/{alert_id}/acknowledge/", {"note": "x"}).status_code == 404
    assert not Alert.objects.filter(acknowledged_at__isnull=False).exists() and acks() == 0


def test_a_second_acknowledgement_keeps_the_first(logged_in: LoggedIn) -> None:
    first, alice = logged_in("operator")
    second, _ = logged_in("admin")
    alert = trading_alert()
    assert first.post(f"/alerts/{alert.pk}/acknowledge/", {"note": "mine"}).status_code == 302
    alert.refresh_from_db()
    when = alert.acknowledged_at
    response = second.post(f"/alerts/{alert.pk}/acknowledge/", {"note": "no, mine"}, follow=True)
    assert response.status_code == 200
    assert f"Alert #{alert.pk} was already acknowledged by operator-user" in response.content.decode()
    alert.refresh_from_db()
    assert (alert.acknowledged_by, alert.acknowledged_at, alert.ack_note) == (alice.user, when, "mine")
    assert acks() == 1


def test_the_menu_count_goes_down_as_alerts_are_acknowledged(logged_in: LoggedIn) -> None:
    admin, _ = logged_in("admin")
    viewer, _ = logged_in("viewer")
    one, two, security = trading_alert("one"), trading_alert("two"), security_alert()
    assert nav_count(admin) == 3 and nav_count(viewer) == 2  # a viewer does not count the security alert
    assert viewer.post(f"/alerts/{one.pk}/acknowledge/", {"note": ""}).status_code == 302
    assert nav_count(admin) == 2 and nav_count(viewer) == 1
    assert admin.post(f"/alerts/{security.pk}/acknowledge/", {"note": ""}).status_code == 302
    assert nav_count(admin) == 1 and nav_count(viewer) == 1
    assert admin.post(f"/alerts/{two.pk}/acknowledge/", {"note": ""}).status_code == 302
    assert nav_count(admin) == 0 and nav_count(viewer) == 0


def test_the_list_shows_unacknowledged_alerts_first_and_marks_them(logged_in: LoggedIn) -> None:
    client, _ = logged_in("operator")
    old = trading_alert("the older one")
    trading_alert("the newer one")
    assert client.post(f"/alerts/{old.pk}/acknowledge/", {"note": "done"}).status_code == 302
    newest = trading_alert("the newest one")
    page = client.get("/alerts/").content.decode()
    assert page.index("the newest one") < page.index("the newer one") < page.index("the older one")
    assert f'id="alert-{newest.pk}" class="unacked"' in page and f'id="alert-{old.pk}" class="acked"' in page
    assert "Acknowledge all 2 shown" in page


def test_acknowledge_all_shown_takes_only_what_the_user_may_see(logged_in: LoggedIn) -> None:
    viewer, who = logged_in("viewer")
    one, two, security = trading_alert("one"), trading_alert("two"), security_alert()
    data = {"alert": [str(one.pk), str(two.pk), str(security.pk)], "note": "weekly sweep"}
    assert viewer.post("/alerts/acknowledge/", data).status_code == 302
    assert set(Alert.objects.filter(acknowledged_by=who.user).values_list("pk", flat=True)) == {one.pk, two.pk}
    assert Alert.objects.get(pk=security.pk).acknowledged_at is None
    entries = AuditEntry.objects.filter(action="alert.acknowledged")
    assert {e.target_id for e in entries} == {str(one.pk), str(two.pk)}
    assert all(e.actor_user == who.user and e.data["note"] == "weekly sweep" for e in entries)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"alert": ["1", "1 OR 1=1"], "note": ""}, "`alert` must be a whole number"),
        ({"alert": ["1"], "note": "bad\x1b[31m"}, "control or text-direction character"),
    ],
)
def test_acknowledge_all_refuses_bad_input_and_changes_nothing(
    logged_in: LoggedIn, data: dict[str, list[str] | str], error: str
) -> None:
    client, _ = logged_in("operator")
    alert = trading_alert()
    data = {**data, "alert": [str(alert.pk), *data["alert"]]}
    response = client.post("/alerts/acknowledge/", data)
    assert response.status_code == 400 and error in response.content.decode()
    assert Alert.objects.get(pk=alert.pk).acknowledged_at is None and acks() == 0
