"""The trade history pages' GET parameters. Invalid input is reported (400) and nothing is queried."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.utils import timezone

from apps.core.input_validation import BIGINT_MAX, TextField
from apps.trading.history import Cursor, TradeFilters, bot_choices
from apps.trading.models import Order

DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"]
# The console did not trade before 2000, and a year ahead is as far as a typo should reach.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_AHEAD = timedelta(days=366)
# A cursor: microseconds since 1970 and a row id, both written by the page's own links.
_CURSOR = re.compile(r"([0-9]{1,17})_([0-9]{1,19})")
_MICROS_MAX = int((datetime(3000, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 10**6


class _DateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"


class CursorField(forms.CharField):
    """A page position "<microseconds>_<id>" (set by the newer/older links; id 0 is "before every row
    of that instant", which the way back from an empty page uses)."""

    widget = forms.HiddenInput

    def to_python(self, value: Any) -> Cursor | None:  # type: ignore[override]  # a Cursor, not a str
        text = super().to_python(value)
        if not text:
            return None
        match = _CURSOR.fullmatch(text)
        if not match or int(match[1]) > _MICROS_MAX or not 0 <= int(match[2]) <= BIGINT_MAX:
            raise forms.ValidationError("This page position is not one the page's links make; start from the newest.")
        return Cursor.parse(int(match[1]), int(match[2]))


class TradeFilterForm(forms.Form):
    """Filters of the fills page (the orders page adds status)."""

    FILTER_FIELDS: tuple[str, ...] = ("bot", "symbol", "side", "mode", "since", "until")

    bot = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Bot")
    symbol = TextField(
        required=False,
        max_length=30,
        strip=True,
        help_text="Exactly as the exchange writes it, e.g. BTC/USDT.",
    )
    side = forms.ChoiceField(required=False, choices=[("", "Any"), *Order.Side.choices])
    mode = forms.ChoiceField(required=False, choices=[("", "Any"), ("paper", "Paper"), ("live", "Live")])
    since = forms.DateTimeField(
        label="From (UTC)", required=False, input_formats=DATETIME_FORMATS, widget=_DateTimeInput()
    )
    until = forms.DateTimeField(
        label="Before (UTC)", required=False, input_formats=DATETIME_FORMATS, widget=_DateTimeInput()
    )
    before = CursorField(required=False)
    after = CursorField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bot_field = self.fields["bot"]
        assert isinstance(bot_field, forms.TypedChoiceField)
        bot_field.choices = [("", "Every bot"), *bot_choices()]

    def clean_symbol(self) -> str:
        symbol: str = self.cleaned_data.get("symbol", "")
        if symbol and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/-]*", symbol):
            raise forms.ValidationError("A symbol has letters, digits and . _ : / - only, e.g. BTC/USDT.")
        return symbol

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
        if data.get("before") is not None and data.get("after") is not None:
            raise forms.ValidationError("Give one position only (before or after).")
        return data

    def filters(self) -> TradeFilters:
        d = self.cleaned_data
        return TradeFilters(
            bot_id=d.get("bot"),
            symbol=d.get("symbol") or "",
            side=d.get("side") or "",
            status=d.get("status") or "",
            mode=d.get("mode") or "",
            since=d.get("since"),
            until=d.get("until"),
        )

    def cursor(self) -> tuple[Cursor | None, Cursor | None]:
        return self.cleaned_data.get("before"), self.cleaned_data.get("after")

    def query(self, **extra: Any) -> str:
        """The submitted filters (as typed), plus `extra`, as a query string for links."""
        params = {name: self.data[name] for name in self.FILTER_FIELDS if self.data.get(name)}
        params.update({k: str(v) for k, v in extra.items() if v is not None})
        return urlencode(params)


class OrderFilterForm(TradeFilterForm):
    FILTER_FIELDS = ("bot", "symbol", "side", "status", "mode", "since", "until")

    status = forms.ChoiceField(required=False, choices=[("", "Any"), *Order.Status.choices])

    field_order = ["bot", "symbol", "side", "status", "mode", "since", "until"]
