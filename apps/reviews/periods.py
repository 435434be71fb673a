"""Review periods: a UTC day ("2026-03-01") or a UTC month ("2026-03"), as [start, end)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from apps.core.exceptions import ApplicationError

DAY, MONTH = "day", "month"
KINDS = (DAY, MONTH)
# [0-9], not \d (which takes any script's digits); matched with fullmatch (no trailing newline).
_FORMATS = {DAY: re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})"), MONTH: re.compile(r"([0-9]{4})-([0-9]{2})")}
FIRST_YEAR = 2009  # nothing was traded on an exchange before; an earlier year is a typo


class PeriodError(ApplicationError):
    """A period that cannot be reviewed; the message says why. `status`: 400 for a malformed period,
    404 for a real one outside the reviewable range (before FIRST_YEAR, or not started yet)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Period:
    kind: str  # "day" or "month"
    key: str  # "2026-03-01" or "2026-03"
    start: dt.datetime  # inclusive, UTC
    end: dt.datetime  # exclusive, UTC

    @property
    def label(self) -> str:
        if self.kind == DAY:
            return f"{self.start:%A %d %B %Y} (UTC)"
        return f"{self.start:%B %Y} (UTC)"

    @property
    def target_id(self) -> str:
        """How the audit log names this review (target "reviews.review:<kind>:<key>")."""
        return f"{self.kind}:{self.key}"

    def is_over(self, now: dt.datetime) -> bool:
        return now >= self.end

    def previous(self) -> Period:
        if self.kind == DAY:
            return day_period(self.start.date() - dt.timedelta(days=1))
        last_day = self.start.date() - dt.timedelta(days=1)
        return month_period(last_day.year, last_day.month)

    def following(self) -> Period:
        if self.kind == DAY:
            return day_period(self.end.date())
        return month_period(self.end.year, self.end.month)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def day_period(day: dt.date) -> Period:
    return Period(DAY, day.isoformat(), _midnight(day), _midnight(day + dt.timedelta(days=1)))


def month_period(year: int, month: int) -> Period:
    start = dt.date(year, month, 1)
    end = dt.date(year + (month == 12), month % 12 + 1, 1)
    return Period(MONTH, f"{year:04d}-{month:02d}", _midnight(start), _midnight(end))


def period_parse(*, kind: str, key: str, now: dt.datetime) -> Period:
    """The period named by `kind` and `key`; PeriodError (with a message to show) if it is not one."""
    if kind not in KINDS:
        raise PeriodError(f"A review covers a day or a month, not {kind[:20]!r}.")
    match = _FORMATS[kind].fullmatch(key)
    shape = "YYYY-MM-DD, e.g. 2026-03-01" if kind == DAY else "YYYY-MM, e.g. 2026-03"
    if match is None:
        raise PeriodError(f"Write a {kind} as {shape}.")
    numbers = [int(part) for part in match.groups()]
    try:
        first_day = dt.date(*numbers) if kind == DAY else dt.date(numbers[0], numbers[1], 1)
    except ValueError:
        raise PeriodError(f"{key} is not a real {kind}; write it as {shape}.") from None
    # Checked before the period is built: the day after 9999-12-31 is not a date.
    today = now.astimezone(dt.UTC).date()
    reviewable = f"reviews cover {FIRST_YEAR}-01-01 up to today ({today:%Y-%m-%d} UTC)"
    if first_day.year < FIRST_YEAR:
        raise PeriodError(f"{key} is before {FIRST_YEAR}: there is nothing to review; {reviewable}.", status=404)
    if first_day > today:
        raise PeriodError(f"{key} has not started yet; {reviewable}.", status=404)
    return day_period(first_day) if kind == DAY else month_period(first_day.year, first_day.month)


def period_from_text(text: str, *, now: dt.datetime) -> Period:
    """A period typed as "2026-03-01" (a day) or "2026-03" (a month)."""
    text = text.strip()
    kind = DAY if len(text) > len("YYYY-MM") else MONTH
    return period_parse(kind=kind, key=text, now=now)


def recent_periods(*, now: dt.datetime, days: int, months: int) -> tuple[list[Period], list[Period]]:
    """The last `days` days and `months` months up to now, newest first (the current ones included)."""
    today = day_period(now.astimezone(dt.UTC).date())
    this_month = month_period(today.start.year, today.start.month)
    day_list, month_list = [today], [this_month]
    while len(day_list) < days:
        day_list.append(day_list[-1].previous())
    while len(month_list) < months:
        month_list.append(month_list[-1].previous())
    return day_list, month_list
