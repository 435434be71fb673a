"""The bot form: base fields plus the chosen strategy's parameters, rendered from its schema."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_UP, Decimal
from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS
from django.db import models

from apps.bots import models as bot_models
from apps.bots.form_help import SYMBOL, market_texts, param_field_name, suggested_values
from apps.bots.models import DEFAULT_HOST, Bot
from apps.bots.selectors import host_labels
from apps.core.exceptions import ApplicationError
from apps.core.input_validation import PlainDecimalField, PlainIntegerField, TextField
from apps.exchanges import port
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.port import ExchangeError
from apps.exchanges.selectors import MarketQuote, exchange_symbols
from apps.strategies import REGISTRY
from apps.strategies.base import Param, ParamError, Size, Strategy, plain
from apps.trading.preview import LIMIT_FIELDS
from apps.trading.tick import MAX_CANDLES

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


def parse_symbols(raw: str) -> list[str]:
    """The symbols field as a list (upper case, without repeats); ValidationError saying what is wrong."""
    symbols = list(dict.fromkeys(s.strip().upper() for s in raw.split(",") if s.strip()))
    if not symbols:
        raise forms.ValidationError("Give at least one symbol.")
    if len(symbols) > MAX_SYMBOLS:
        raise forms.ValidationError(f"Give at most {MAX_SYMBOLS} symbols (a bot should trade a few markets).")
    malformed = [s for s in symbols if not SYMBOL.fullmatch(s)]
    if malformed:
        shown = ", ".join(s[:25] for s in malformed[:3])
        raise forms.ValidationError(f"Write each symbol as BASE/QUOTE in letters and digits, e.g. BTC/USDT ({shown}).")
    return symbols


def _automatic(param: Param, value: Any) -> bool:
    """Whether a strategy value was filled in by the form rather than typed: empty, or still the static default
    (which a market-fitted value replaces)."""
    if param.kind == "choice":
        return value in (None, "")
    return value in (None, "") or str(value) == plain(param.default)


@dataclass(frozen=True)
class ParamRow:
    field: forms.BoundField
    measure: str
    hint: str  # the market beside it ("" when unknown)


@dataclass(frozen=True)
class StrategySection:
    strategy: type[Strategy]
    active: bool
    rows: list[ParamRow]


class StrategyParamsForm(forms.Form):
    """One strategy's parameters as the bot form shows them for a strategy not chosen: rendered, never validated."""

    def __init__(self, *, strategy: type[Strategy], initial: dict[str, Any]) -> None:
        super().__init__(initial=initial)
        for param in strategy.params:
            self.fields[param_field_name(strategy, param)] = _param_field(param)


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
        self.strategy_values: dict[str, Any] | None = None  # the parameters, once they are clean
        self.market: MarketQuote | None = None
        self.market_error = ""
        self.suggested = suggested_values(None)
        # As stored before this form (clean() sets the instance's strategy and parameters).
        self.stored_strategy = self.instance.strategy if self.instance.pk else None
        self.stored_params: dict[str, Any] = dict(self.instance.params) if self.instance.pk else {}
        for name in NUMBER_RANGES:
            self.fields[name] = _number_field(name, self.fields[name])
        for param in strategy.params:
            field = _param_field(param)
            if strategy.key == self.stored_strategy and param.name in self.stored_params:
                field.initial = self.stored_params[param.name]
            self.fields[param_field_name(strategy, param)] = field
        if self.instance.pk and "symbols" not in (kwargs.get("initial") or {}):
            self.initial["symbols"] = ", ".join(self.instance.symbols)
        self.fields["account"].empty_label = None  # type: ignore[attr-defined]
        self.fields["host"] = forms.ChoiceField(
            label="Host",
            choices=[(label, label) for label in host_labels(self.instance.host)],
            required=False,
            help_text="The fleet supervisor (machine) that runs this bot's worker; change it only while stopped.",
        )

    def base_fields_bound(self) -> list[forms.BoundField]:
        return [self[name] for name in BASE_FIELDS]

    def apply_market(self, quote: MarketQuote | None, error: str = "") -> None:
        """Show the market beside the fields and fit the values nobody typed to it (call before rendering)."""
        self.market, self.market_error = quote, error
        self.suggested = suggested_values(quote)
        if self.strategy.key == self.stored_strategy:
            return  # the bot's own parameters: never replaced
        for param in self.strategy.params:
            name = param_field_name(self.strategy, param)
            self.fields[name].widget.attrs["data-suggested"] = self.suggested[name]
            if not self.is_bound and _automatic(param, self.initial.get(name)):
                self.initial.pop(name, None)
                self.fields[name].initial = self.suggested[name]

    @property
    def market_summary(self) -> str:
        return self.market_hint("summary")

    def market_hint(self, measure: str) -> str:
        if self.market is None:
            return self.market_error if measure == "summary" else ""
        return market_texts(self.market).get(measure, "")

    def sections(self) -> list[StrategySection]:
        """Every strategy's parameters: the chosen one's are this form's (validated); the others' are shown
        hidden with what was typed in them, so that switching strategy (in the page, or by a submit without
        script) keeps every value."""
        sections = []
        for strategy in REGISTRY.values():
            if strategy is self.strategy:
                fields = [self[param_field_name(strategy, p)] for p in strategy.params]
            else:
                fields = self._other_fields(strategy)
            rows = [
                ParamRow(field, p.measure, self.market_hint(p.measure) if p.measure else "")
                for field, p in zip(fields, strategy.params, strict=True)
            ]
            sections.append(StrategySection(strategy, strategy is self.strategy, rows))
        return sections

    def _other_fields(self, strategy: type[Strategy]) -> list[forms.BoundField]:
        source = self.data if self.is_bound else self.initial
        stored = self.stored_params if strategy.key == self.stored_strategy else None
        initial: dict[str, Any] = {}
        for param in strategy.params:
            name = param_field_name(strategy, param)
            if stored is not None and name not in source:
                initial[name] = stored.get(param.name, param.default)
            elif stored is None and _automatic(param, source.get(name)):
                initial[name] = self.suggested[name]
            else:
                initial[name] = source.get(name)
        side = StrategyParamsForm(strategy=strategy, initial=initial)
        if stored is None:
            for name, field in side.fields.items():
                field.widget.attrs["data-suggested"] = self.suggested[name]
        return [side[name] for name in side.fields]

    def preview_bot(self) -> Bot | None:
        """The bot these values describe, unsaved, for the first tick's preview (after is_valid()); None when
        the account, the symbols or the parameters are not usable. Limits left invalid are None (not checked)."""
        data = getattr(self, "cleaned_data", {})
        if self.strategy_values is None or data.get("account") is None or self.has_error("symbols"):
            return None
        if not data.get("symbols"):
            return None
        bot = Bot(
            account=data["account"],
            symbols=data["symbols"],
            strategy=self.strategy.key,
            params=self.strategy.to_json(self.strategy_values),
            mode=self.instance.mode,
            halted=self.instance.halted,
            host=data.get("host") or self.instance.host or DEFAULT_HOST,
        )
        for name in ("tick_interval_s", "paper_balance"):  # the model's default when left invalid
            if data.get(name) is not None:
                setattr(bot, name, data[name])
        for name in LIMIT_FIELDS:
            setattr(bot, name, data.get(name))
        return bot

    def clean_symbols(self) -> list[str]:
        return parse_symbols(self.cleaned_data["symbols"])

    def _field(self, param: str) -> str:
        return param_field_name(self.strategy, self.strategy.param(param))

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
        raw = {p.name: data.get(self._field(p.name)) for p in self.strategy.params}
        if all(v is not None for v in raw.values()):
            try:
                values = self.strategy.clean(raw)
            except ParamError as exc:
                self.add_error(self._field(exc.field) if exc.field else None, exc.message)
            else:
                self.strategy_values = values
                self.instance.params = self.strategy.to_json(values)
                if account is not None and symbols and not self.has_error("symbols"):
                    self._check_against_limits(values, account, symbols, data)
        self.instance.strategy = self.strategy.key
        return data

    def _check_against_limits(
        self, values: dict[str, Any], account: ExchangeAccount, symbols: list[str], data: dict[str, Any]
    ) -> None:
        """Refuse parameters whose own orders the order gate would refuse under these limits: a bot that cannot
        trade, or one whose every tick would leave refusals in the audit log. Sizes in base units are valued at
        the symbol's current price (public market data); when it cannot be read, the form is refused rather than
        saved unchecked."""
        footprint = self.strategy.footprint(values)
        if footprint is None:
            return
        tightening = self._tightening(values, data)
        errors: dict[str, list[str]] = {}

        def refuse(field: str, message: str) -> None:
            if message not in errors.setdefault(field, []):
                errors[field].append(message)

        size_field = self._field(footprint.param)
        checks = [
            (size, data.get(limit), label)
            for size, limit, label in (
                (footprint.largest_order, "max_order_notional", "max order notional"),
                (footprint.full_position, "max_position_notional", "max position notional"),
            )
            if not tightening(limit)
        ]
        market: port.Exchange | None = None
        for symbol in symbols:
            base, quote = symbol.split("/")
            price: Decimal | None = None
            if any(size.needs_market_price and limit is not None for size, limit, _ in checks):
                try:
                    market = market or port.Exchange(exchange_id=account.exchange_id)
                    price = market.price(symbol)
                except ExchangeError as exc:
                    refuse(
                        NON_FIELD_ERRORS,
                        f"Could not read the price of {symbol} to check the order size; try again ({exc.message}).",
                    )
                    continue
            for size, limit, label in checks:
                if limit is not None and size.value(price) > limit:
                    text = _size_text(size, base, quote, price)
                    refuse(size_field, f"{text} is above the {label} {plain(limit)} {quote}.")
        max_open = data.get("max_open_orders")
        if max_open is not None and footprint.resting_orders > max_open and not tightening("max_open_orders"):
            field = self._field(footprint.resting_param) if footprint.resting_param else NON_FIELD_ERRORS
            refuse(field, f"{footprint.resting_what}, more than the max open orders {max_open}.")
        per_minute = data.get("max_orders_per_minute")
        if per_minute is not None and footprint.resting_orders > per_minute and not tightening("max_orders_per_minute"):
            # Its first tick proposes an order on every level: the gate would refuse (and audit) the rest, tick
            # after tick, until the minute's window lets them through.
            field = self._field(footprint.resting_param) if footprint.resting_param else NON_FIELD_ERRORS
            refuse(field, f"{footprint.resting_what}, more than the max orders per minute {per_minute}.")
        slow = values.get("slow")
        if isinstance(slow, int) and slow + 1 > MAX_CANDLES:
            refuse(
                self._field("slow"),
                f"A slow window of {slow} needs {slow + 1} candles; a tick reads at most {MAX_CANDLES}, so the bot "
                "would never trade.",
            )
        for field, messages in errors.items():
            for message in messages:
                self.add_error(None if field == NON_FIELD_ERRORS else field, message)

    def _tightening(self, values: dict[str, Any], data: dict[str, Any]) -> Callable[[str], bool]:
        """Whether an edit only lowers (or keeps) a limit, with the strategy and its parameters as stored.

        Such an edit is not refused by the checks above: the gate enforces the lower limit on the next order,
        and refusing it would block a risk reduction an operator may make (loosening needs an admin; changing
        the parameters of a live bot is a loosening).
        """
        stored = Bot.objects.filter(pk=self.instance.pk).first() if self.instance.pk else None
        if stored is None or stored.strategy != self.strategy.key:
            return lambda limit: False
        try:
            same_params = self.strategy.clean(stored.params) == values
        except ParamError:
            same_params = False

        def tightening(limit: str) -> bool:
            value = data.get(limit)
            return same_params and value is not None and value <= getattr(stored, limit)

        return tightening

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


def _money(number: Decimal) -> str:
    return plain(number.quantize(Decimal("0.00000001"), rounding=ROUND_UP))


def _size_text(size: Size, base: str, quote: str, market_price: Decimal | None) -> str:
    """The size with its numbers: "DCA buy 50 USDT", "Grid order 0.001 BTC x 40000 USDT (its top level) = 40 USDT"."""
    what = size.what.format(base=base, quote=quote)
    if size.quote is not None:
        return f"{what} {_money(size.quote)} {quote}"
    if size.price is not None:
        price, note = size.price, size.price_note
    else:
        assert market_price is not None  # the caller read it: needs_market_price
        price, note = market_price, f"the current price of {base}/{quote}"
    assert size.base is not None
    return f"{what} {plain(size.base)} {base} x {plain(price)} {quote} ({note}) = {_money(size.value(price))} {quote}"


def strategy_from(request_data: Any, default: str = "grid", *, key: str = "strategy") -> type[Strategy]:
    """The strategy `request_data[key]` names (the default when absent); UnknownStrategyError for any other value."""
    name = request_data.get(key)
    if name is None:
        return REGISTRY[default]
    strategy = REGISTRY.get(str(name))
    if strategy is None:
        raise UnknownStrategyError(f"There is no such strategy. Choose one of: {', '.join(REGISTRY)}.")
    return strategy
