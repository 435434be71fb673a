"""How the console writes times, numbers and money for people: one format each, on every page.

Times are UTC, "2026-12-04 20:01:32 UTC", always with how long ago ("12 s ago", "3 min ago", "2 h ago",
"5 d ago"; "in 3 min" for a time to come). Numbers are grouped ("29,900.5"), at the market's decimals
when known, else without trailing zeros (never "0.00100000" beside "0.001"), and at most MAX_PLACES
decimals. Money carries its currency ("1,234.56 USDT"); a gain or loss is signed and says so in words
("+12.30 USDT (gain)", "\u22124.10 USDT (loss)") for whoever cannot tell green from red.

static/js/format.js writes the same for rows a page adds live: change both together.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MAX_PLACES = 8
MINUS = "\u2212"  # a real minus sign: as wide as the plus, and not a hyphen
# Currencies whose amounts are written with two decimals, as money usually is.
CASH = frozenset({"USD", "USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI", "EUR", "GBP", "CHF", "TRY", "BRL"})
# Below these many seconds the relative part counts in the next unit down.
_UNITS = ((86_400, "d"), (3_600, "h"), (60, "min"), (1, "s"))


# -- times -------------------------------------------------------------------------------------------


def moment_text(value: datetime) -> str:
    """`value` as "2026-12-04 20:01:32 UTC" (a naive time is taken as UTC)."""
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def moment_iso(value: datetime) -> str:
    """The machine form of `value` for a <time datetime>: "2026-12-04T20:01:32.123456+00:00"."""
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def ago_text(value: datetime, *, now: datetime | None = None) -> str:
    """How long ago `value` was: "12 s ago", "3 min ago", "2 h ago", "5 d ago" (or "in 3 min")."""
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    seconds = round(((now or datetime.now(UTC)) - moment).total_seconds())
    span = abs(seconds)
    for size, unit in _UNITS:
        if span >= size or unit == "s":
            count = span // size
            return f"in {count} {unit}" if seconds < 0 else f"{count} {unit} ago"
    raise AssertionError("unreachable")  # pragma: no cover - "s" always matches


def moment_with_ago(value: datetime, *, now: datetime | None = None) -> str:
    """The whole text of a time: "2026-12-04 20:01:32 UTC (12 s ago)", as a <time> element shows it."""
    return f"{moment_text(value)} ({ago_text(value, now=now)})"


# -- numbers ---------------------------------------------------------------------------------------


def to_decimal(value: object) -> Decimal | None:
    """A Decimal from a Decimal, int, float or numeric string; None for None, "" or anything else."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _rounded(number: Decimal, places: int | None) -> Decimal:
    if places is not None:
        number = number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    else:
        number = number.quantize(Decimal(1).scaleb(-MAX_PLACES), rounding=ROUND_HALF_UP).normalize()
    return abs(number) if number.is_zero() else number  # never "-0"


def _grouped(number: Decimal) -> str:
    text = format(abs(number), ",f")
    return f"{MINUS}{text}" if number < 0 else text


def number_text(value: object, places: int | None = None) -> str:
    """A quantity or price for people: "29,900.00" at `places` decimals (the market's), else "0.001".

    Without `places`, trailing zeros go and at most MAX_PLACES decimals remain. "" for no value.
    """
    number = to_decimal(value)
    if number is None:
        return "" if value is None else str(value)
    return _grouped(_rounded(number, None if places is None else max(0, min(places, 12))))


def currency_places(currency: str) -> int | None:
    """Decimals money in `currency` is written with: two for cash-like currencies, else as precise as held."""
    return 2 if currency.upper() in CASH else None


def money_text(value: object, currency: str) -> str:
    """ "1,234.56 USDT": the amount with its currency (two decimals for cash-like ones)."""
    text = number_text(value, currency_places(currency))
    return f"{text} {currency}".strip() if text else ""


def pnl_parts(value: object, currency: str) -> tuple[str, str]:
    """A gain or loss as ("+12.30 USDT", "gain"), ("\u22124.10 USDT", "loss") or ("0.00 USDT", "even")."""
    number = to_decimal(value)
    if number is None:
        return ("" if value is None else str(value)), ""
    rounded = _rounded(number, currency_places(currency))
    tone = "gain" if rounded > 0 else "loss" if rounded < 0 else "even"
    sign = "+" if tone == "gain" else ""
    return f"{sign}{_grouped(rounded)} {currency}".strip(), tone


def pnl_text(value: object, currency: str) -> str:
    """ "+12.30 USDT (gain)", "\u22124.10 USDT (loss)", "0.00 USDT": the sign and the word, for plain text."""
    text, tone = pnl_parts(value, currency)
    return f"{text} ({tone})" if tone in ("gain", "loss") else text


def step_places(step: object) -> int | None:
    """The decimals of a market step ("0.01" → 2, "1" → 0); None when there is none."""
    number = to_decimal(step)
    if number is None or number <= 0:
        return None
    exponent = number.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else None
