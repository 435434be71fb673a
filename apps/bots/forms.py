"""The bot form: base fields plus the chosen strategy's parameters, rendered from its schema."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django import forms
from django.db import models

from apps.bots import models as bot_models
from apps.bots.models import DEFAULT_HOST, Bot
from apps.bots.selectors import host_labels
from apps.core.exceptions import ApplicationError
from apps.core.input_validation import PlainDecimalField, PlainIntegerField, TextField
from apps.exchanges.port import ExchangeError
from apps.exchanges.selectors import exchange_symbols
from apps.strategies import REGISTRY
from apps.strategies.base import Param, ParamError, Strategy

PARAM_PREFIX = "param_"
BASE_FIELDS = [
    "name",
    "account",
    "symbols",
    "tick_interval_s",
    "paper_balance",
    "max_order_notional",
    "max_position_notional",
    "max_open_orders",
    "max_orders_per_minute",
    "daily_loss_limit",
    "max_drawdown_pct",
    "size_anomaly_factor",
    "host",
]
MAX_SYMBOLS = 20
# A unified spot symbol as ccxt writes it: BASE/QUOTE in capitals and digits (e.g. 1000SHIB/USDT).
SYMBOL = re.compile(r"[A-Z0-9]{1,20}/[A-Z0-9]{1,20}")
_ZERO = Decimal(0)
# Each number of the form: (lowest, highest, lowest excluded, unit). Money is in the quote currency.
NUMBER_RANGES: dict[str, tuple[Decimal | int, Decimal | int, bool, str]] = {
    "tick_interval_s": (1, bot_models.TICK_INTERVAL_MAX_S, False, " seconds"),
    "paper_balance": (_ZERO, bot_models.MONEY_MAX, True, ""),
    "max_order_notional": (_ZERO, bot_models.MONEY_MAX, True, ""),
    "max_position_notional": (_ZERO, bot_models.MONEY_MAX, True, ""),
    "max_open_orders": (1, bot_models.MAX_OPEN_ORDERS_MAX, False, ""),
    "max_orders_per_minute": (1, bot_models.MAX_ORDERS_PER_MINUTE_MAX, False, ""),
    "daily_loss_limit": (_ZERO, bot_models.MONEY_MAX, True, ""),
    "max_drawdown_pct": (_ZERO, Decimal(100), True, " %"),
    "size_anomaly_factor": (bot_models.SIZE_ANOMALY_FACTOR_MIN, bot_models.SIZE_ANOMALY_FACTOR_MAX, False, ""),
}


class UnknownStrategyError(ApplicationError):
    """`?strategy=` names no strategy of the registry."""


def _param_field(param: Param) -> forms.Field:
    common: dict[str, Any] = {"label": param.label, "help_text": param.help, "initial": param.default}
    if param.kind == "choice":
        return forms.ChoiceField(choices=[(c, c) for c in param.choices], **common)
    if param.kind == "int":
        return PlainIntegerField(lo=int(param.min or 0), hi=int(param.max or 1_000_000), **common)
    lo = Decimal(param.min) if param.min is not None else _ZERO
    return PlainDecimalField(
        lo=lo, hi=Decimal(param.max) if param.max is not None else None, max_digits=20, decimal_places=8, **common
    )


def _number_field(name: str, model_field: forms.Field) -> forms.Field:
    """The form field of a bot number: typed plainly, within its business range and its column."""
    lo, hi, lo_exclusive, unit = NUMBER_RANGES[name]
    common: dict[str, Any] = {
        "label": model_field.label,
        "help_text": model_field.help_text,
        "initial": model_field.initial,
        "required": model_field.required,
    }
    column = Bot._meta.get_field(name)
    if isinstance(column, models.DecimalField):
        return PlainDecimalField(
            lo=Decimal(lo),
            hi=Decimal(hi),
            lo_exclusive=lo_exclusive,
            unit=unit,
            max_digits=column.max_digits,
            decimal_places=column.decimal_places,
            **common,
        )
    return PlainIntegerField(lo=int(lo), hi=int(hi), unit=unit, **common)


class BotForm(forms.ModelForm):  # type: ignore[type-arg]
    symbols = TextField(
        help_text=f"Comma-separated, as the exchange lists them, e.g. BTC/USDT, ETH/USDT (at most {MAX_SYMBOLS}).",
        max_length=500,
        name=True,
    )

    class Meta:
        model = Bot
        fields = BASE_FIELDS
        labels = {
            "tick_interval_s": "Tick interval (seconds)",
            "max_order_notional": "Max order size (quote)",
            "max_position_notional": "Max position (quote)",
            "daily_loss_limit": "Daily loss limit (quote)",
            "max_drawdown_pct": "Max drawdown (%)",
            "size_anomaly_factor": "Size anomaly factor",
        }
        help_texts = {
            "paper_balance": "Quote currency the paper simulator starts with.",
            "max_position_notional": "Largest position per symbol, in quote currency.",
            "daily_loss_limit": "Halt the bot when today's loss reaches this, in quote currency.",
            "max_drawdown_pct": "Halt the bot when equity falls this far below its peak, in percent.",
            "size_anomaly_factor": "Refuse an order this many times larger than the bot's median order.",
        }

    def __init__(self, *args: Any, strategy: type[Strategy], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.strategy = strategy
        for name in NUMBER_RANGES:
            self.fields[name] = _number_field(name, self.fields[name])
        current = self.instance.params if self.instance.pk and self.instance.strategy == strategy.key else {}
        for param in strategy.params:
            field = _param_field(param)
            if param.name in current:
                field.initial = current[param.name]
            self.fields[PARAM_PREFIX + param.name] = field
        if self.instance.pk:
            self.initial["symbols"] = ", ".join(self.instance.symbols)
        self.fields["account"].empty_label = None  # type: ignore[attr-defined]
        self.fields["host"] = forms.ChoiceField(
            label="Host",
            choices=[(label, label) for label in host_labels(self.instance.host)],
            required=False,
            help_text="The fleet supervisor (machine) that runs this bot's worker; change it only while stopped.",
        )

    def param_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith(PARAM_PREFIX)]

    def base_fields_bound(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if not name.startswith(PARAM_PREFIX)]

    def clean_symbols(self) -> list[str]:
        raw: str = self.cleaned_data["symbols"]
        symbols = list(dict.fromkeys(s.strip().upper() for s in raw.split(",") if s.strip()))
        if not symbols:
            raise forms.ValidationError("Give at least one symbol.")
        if len(symbols) > MAX_SYMBOLS:
            raise forms.ValidationError(f"Give at most {MAX_SYMBOLS} symbols (a bot should trade a few markets).")
        malformed = [s for s in symbols if not SYMBOL.fullmatch(s)]
        if malformed:
            shown = ", ".join(s[:25] for s in malformed[:3])
            raise forms.ValidationError(
                f"Write each symbol as BASE/QUOTE in letters and digits, e.g. BTC/USDT ({shown})."
            )
        return symbols

    def clean_host(self) -> str:
        bot = self.instance
        host: str = self.cleaned_data.get("host") or bot.host or DEFAULT_HOST  # left out: unchanged
        if bot.pk and host != Bot.objects.values_list("host", flat=True).get(pk=bot.pk):
            stopped = (Bot.Observed.STOPPED, Bot.Observed.HALTED, Bot.Observed.ERROR)
            if bot.desired_state == Bot.Desired.RUNNING or bot.observed_state not in stopped:
                raise forms.ValidationError(
                    "Stop the bot before moving it to another host (two hosts must never run it)."
                )
        return host

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        account, symbols = data.get("account"), data.get("symbols")
        if account is not None and symbols:
            try:
                known = exchange_symbols(account)
            except ExchangeError as exc:
                raise forms.ValidationError(f"Could not load the exchange's markets: {exc.message}") from None
            unknown = [s for s in symbols if s not in known]
            if unknown:
                self.add_error("symbols", f"Not listed on {account.exchange_id}: {', '.join(unknown)}.")
        raw = {p.name: data.get(PARAM_PREFIX + p.name) for p in self.strategy.params}
        if all(v is not None for v in raw.values()):
            try:
                values = self.strategy.clean(raw)
            except ParamError as exc:
                self.add_error(PARAM_PREFIX + exc.field if exc.field else None, exc.message)
            else:
                self.instance.params = self.strategy.to_json(values)
        self.instance.strategy = self.strategy.key
        return data

    def save(self, commit: bool = True) -> Bot:
        bot: Bot = super().save(commit=False)
        bot.symbols = self.cleaned_data["symbols"]
        if commit:
            bot.save()
        return bot


class FlattenOnKillForm(forms.Form):
    """What the kill switch does with the bot's position once every order is cancelled (admins only)."""

    flatten_on_kill = forms.TypedChoiceField(
        label="When the kill switch fires",
        choices=[("off", "Leave the bot's position as it is"), ("on", "Market-sell the bot's position")],
        coerce=lambda value: value == "on",
        widget=forms.RadioSelect,
        help_text="Selling happens after every order is cancelled and checked, on the bot's own symbols, for live "
        "bots only; the amount is the bot's recorded position.",
    )


def strategy_from(request_data: Any, default: str = "grid") -> type[Strategy]:
    """The strategy `?strategy=` names (the default when absent); UnknownStrategyError for any other value."""
    key = request_data.get("strategy")
    if key is None:
        return REGISTRY[default]
    strategy = REGISTRY.get(str(key))
    if strategy is None:
        raise UnknownStrategyError(f"There is no such strategy. Choose one of: {', '.join(REGISTRY)}.")
    return strategy
