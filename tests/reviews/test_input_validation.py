"""Review periods outside the reviewable range are a 404 with the range in the message; malformed ones a 400."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.reviews.models import ReviewSignoff
from apps.reviews.periods import PeriodError, period_parse
from tests.people import Person

pytestmark = pytest.mark.django_db
LoggedIn = Callable[[str], tuple[Client, Person]]
NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("day", "9999-12-31"),
        ("month", "9999-12"),
        ("day", "2027-03-15"),
        ("day", "2026-03-16"),
        ("month", "2026-04"),
        ("day", "2008-12-31"),
        ("month", "0001-01"),
        ("day", "1000-06-15"),
    ],
)
def test_it_answers_not_found_for_a_real_period_outside_the_reviewable_range(kind: str, key: str) -> None:
    with pytest.raises(PeriodError) as caught:
        period_parse(kind=kind, key=key, now=NOW)
    assert caught.value.status == 404
    assert "reviews cover 2009-01-01 up to today (2026-03-15 UTC)" in caught.value.message


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("day", "0000-01-01"),
        ("month", "2026-13"),
        ("day", "2026-00-10"),
        ("day", "2026-02-30"),
        ("day", "9999-99-99"),
        ("day", "2026-03-01\x00"),
        ("month", "../../etc"),
        ("day", "%2e%2e"),
    ],
)
def test_it_answers_bad_request_for_what_is_not_a_period(kind: str, key: str) -> None:
    with pytest.raises(PeriodError) as caught:
        period_parse(kind=kind, key=key, now=NOW)
    assert caught.value.status == 400


def test_the_edges_of_the_range_are_reviewable() -> None:
    assert period_parse(kind="day", key="2009-01-01", now=NOW).key == "2009-01-01"
    assert period_parse(kind="day", key="2026-03-15", now=NOW).end == dt.datetime(2026, 3, 16, tzinfo=dt.UTC)
    assert period_parse(kind="month", key="2026-03", now=NOW).key == "2026-03"


@pytest.mark.parametrize(
    "url",
    [
        "/reviews/day/9999-12-31/",
        "/reviews/month/9999-12/",
        "/reviews/day/9999-12-31/export.json",
        "/reviews/day/1999-01-01/",
        "/reviews/?period=9999-12-31",
    ],
)
def test_a_page_outside_the_range_is_a_404_that_says_the_range(logged_in: LoggedIn, url: str) -> None:
    client, _ = logged_in("viewer")
    response = client.get(url)
    today = timezone.now().date().isoformat()
    assert response.status_code == 404
    assert f"reviews cover 2009-01-01 up to today ({today} UTC)" in response.content.decode()
    assert not AuditEntry.objects.filter(action="review.exported").exists()


def test_signing_off_or_checking_balances_outside_the_range_changes_nothing(logged_in: LoggedIn) -> None:
    client, _ = logged_in("operator")
    before = AuditEntry.objects.count()
    assert client.post("/reviews/day/9999-12-31/signoff/", {"digest": "0" * 64}).status_code == 404
    assert client.post("/reviews/month/9999-12/balances/").status_code == 404
    assert not ReviewSignoff.objects.exists() and AuditEntry.objects.count() == before


@pytest.mark.parametrize(
    ("note", "error"),
    [("ok\x00", "Null characters are not allowed"), ("esc\x1b[31m", "U+001B"), ("c1\x85inside", "U+0085")],
)
def test_a_sign_off_note_with_control_characters_is_refused(logged_in: LoggedIn, note: str, error: str) -> None:
    client, _ = logged_in("operator")
    day = (timezone.now() - dt.timedelta(days=1)).date().isoformat()
    response = client.post(f"/reviews/day/{day}/signoff/", {"digest": "0" * 64, "note": note})
    assert response.status_code == 400 and error in response.content.decode()
    assert not ReviewSignoff.objects.exists()


def test_a_multi_line_note_is_fine(logged_in: LoggedIn) -> None:
    from apps.reviews.forms import SignoffForm

    form = SignoffForm({"digest": "0" * 64, "note": "Checked fills.\r\n\tAll good."})
    assert form.is_valid(), form.errors
