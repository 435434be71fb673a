"""Review periods: UTC days and months, and the clear refusals for anything else."""

from __future__ import annotations

import datetime as dt

import pytest

from apps.reviews.periods import PeriodError, period_from_text, period_parse, recent_periods

NOW = dt.datetime(2026, 3, 15, 10, 30, tzinfo=dt.UTC)


def test_a_day_and_a_month_are_utc_half_open_ranges() -> None:
    day = period_parse(kind="day", key="2024-02-29", now=NOW)
    assert (day.start, day.end) == (dt.datetime(2024, 2, 29, tzinfo=dt.UTC), dt.datetime(2024, 3, 1, tzinfo=dt.UTC))
    december = period_parse(kind="month", key="2025-12", now=NOW)
    assert (december.start, december.end) == (
        dt.datetime(2025, 12, 1, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    assert december.following().key == "2026-01" and december.previous().key == "2025-11"
    assert day.previous().key == "2024-02-28" and day.following().key == "2024-03-01"
    assert period_parse(kind="month", key="2026-01", now=NOW).previous().key == "2025-12"
    assert day.target_id == "day:2024-02-29"


def test_the_current_day_and_month_can_be_reviewed_while_they_run() -> None:
    today = period_parse(kind="day", key="2026-03-15", now=NOW)
    assert not today.is_over(NOW) and today.is_over(today.end)
    assert not period_parse(kind="month", key="2026-03", now=NOW).is_over(NOW)


@pytest.mark.parametrize(
    ("kind", "key", "message"),
    [
        ("week", "2026-03", "a day or a month"),
        ("day", "2026-3-1", "YYYY-MM-DD"),
        ("day", "2026-03", "YYYY-MM-DD"),
        ("day", "2026-02-30", "not a real day"),
        ("day", "2025-02-29", "not a real day"),
        ("month", "2026-13", "not a real month"),
        ("month", "2026-00", "not a real month"),
        ("month", "2026-03-01", "YYYY-MM"),
        ("month", "0999-01", "before 2009"),
        ("day", "0000-01-01", "not a real day"),
        ("month", "1999-01", "before 2009"),
        ("day", "2026-03-16", "has not started"),
        ("month", "2026-04", "has not started"),
        ("day", "\uff12\uff10\uff12\uff16-03-01", "YYYY-MM-DD"),  # full-width digits: digits to \d, not to us
        ("day", "2026-03-01\n", "YYYY-MM-DD"),
    ],
)
def test_it_refuses_what_is_not_a_reviewable_period(kind: str, key: str, message: str) -> None:
    with pytest.raises(PeriodError) as caught:
        period_parse(kind=kind, key=key, now=NOW)
    assert message in caught.value.message


def test_a_typed_period_is_a_day_or_a_month_by_its_length() -> None:
    assert period_from_text(" 2026-03-01 ", now=NOW).kind == "day"
    assert period_from_text("2026-02", now=NOW).kind == "month"
    with pytest.raises(PeriodError):
        period_from_text("yesterday", now=NOW)


def test_recent_periods_start_with_the_current_ones() -> None:
    days, months = recent_periods(now=NOW, days=3, months=4)
    assert [p.key for p in days] == ["2026-03-15", "2026-03-14", "2026-03-13"]
    assert [p.key for p in months] == ["2026-03", "2026-02", "2026-01", "2025-12"]
