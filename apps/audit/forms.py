from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.utils import timezone

from apps.audit.selectors import AuditFilters
from apps.core.input_validation import TextField

DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"]
FILTER_FIELDS = ("q", "actor", "action", "target", "since", "until")
SEQ_MAX = 2**62  # within BIGINT; a larger number is a typo, not a position
# The time filters' range: the console did not exist before 2000, and a year ahead is as far as a
# typo should reach (the year 9999 plus a time zone is beyond what a datetime can hold).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_AHEAD = timedelta(days=366)


class _DateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"


class AuditFilterForm(forms.Form):
    """The audit page's GET parameters. Invalid input is reported and nothing is queried."""

    q = TextField(
        label="Text",
        required=False,
        min_length=3,
        max_length=200,
        strip=True,
        help_text="Found in the action, actor, target or data (at least 3 characters).",
    )
    actor = TextField(required=False, max_length=150, help_text="A username, or system:<component>.")
    action = forms.RegexField(
        required=False,
        max_length=101,
        regex=r"^[A-Za-z0-9_.:-]+\*?$",
        help_text="e.g. bot.updated, or bot.* for every bot action.",
        error_messages={"invalid": "Letters, digits and . _ : - only, optionally ending with *."},
        widget=forms.TextInput(attrs={"list": "audit-actions", "autocomplete": "off"}),
    )
    target = TextField(required=False, max_length=201, help_text='A type ("bots.bot") or a type and id ("bots.bot:7").')
    since = forms.DateTimeField(
        label="From (UTC)", required=False, input_formats=DATETIME_FORMATS, widget=_DateTimeInput()
    )
    until = forms.DateTimeField(
        label="Before (UTC)", required=False, input_formats=DATETIME_FORMATS, widget=_DateTimeInput()
    )
    # Keyset cursors (set by the page's links, or "start at #" for a jump).
    before = forms.IntegerField(required=False, min_value=1, max_value=SEQ_MAX, widget=forms.HiddenInput())
    after = forms.IntegerField(required=False, min_value=0, max_value=SEQ_MAX, widget=forms.HiddenInput())
    start = forms.IntegerField(label="Start at #", required=False, min_value=1, max_value=SEQ_MAX)

    def clean_target(self) -> tuple[str, str]:
        raw: str = self.cleaned_data.get("target", "").strip()
        if not raw:
            return "", ""
        kind, _, ident = raw.partition(":")
        if not kind or len(kind) > 100 or len(ident) > 100:
            raise forms.ValidationError('Write a target as "type" or "type:id", each at most 100 characters.')
        return kind, ident

    def _utc(self, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if timezone.is_naive(value) else value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = self._utc(data.get("since")), self._utc(data.get("until"))
        data["since"], data["until"] = since, until
        latest = timezone.now() + LATEST_AHEAD
        for name, value in (("since", since), ("until", until)):
            if value is not None and not EARLIEST <= value <= latest:
                self.add_error(name, f"Give a time between {EARLIEST:%Y-%m-%d} and {latest:%Y-%m-%d} (UTC).")
        since, until = data.get("since"), data.get("until")  # add_error() took a refused one out
        if since and until and since >= until:
            self.add_error("until", "Must be later than From.")
        cursors = [name for name in ("before", "after", "start") if data.get(name) is not None]
        if len(cursors) > 1:
            raise forms.ValidationError("Give one position only (before, after or start).")
        return data

    def filters(self) -> AuditFilters:
        d = self.cleaned_data
        target_type, target_id = d.get("target") or ("", "")
        return AuditFilters(
            actor=d.get("actor") or "",
            action=d.get("action") or "",
            target_type=target_type,
            target_id=target_id,
            since=d.get("since"),
            until=d.get("until"),
            text=(d.get("q") or "").lower(),
        )

    def cursor(self) -> tuple[int | None, int | None]:
        """(before, after) for the selector; "start at #N" shows N first."""
        d = self.cleaned_data
        if d.get("start") is not None:
            return int(d["start"]) + 1, None
        return d.get("before"), d.get("after")

    def query(self, **extra: Any) -> str:
        """The submitted filters (as typed), plus `extra`, as a query string for links."""
        params = {name: self.data[name] for name in FILTER_FIELDS if self.data.get(name)}
        params.update({k: v for k, v in extra.items() if v is not None})
        return urlencode(params)
