"""What the bot form shows beside its fields: the market's price and rules, and values fitted to them.

Shared by the server-rendered form and the small JSON endpoint its script asks when the account or the symbol
changes, so both say the same thing in the same words.
"""

from __future__ import annotations

import re
from decimal import ROUND_UP, Decimal
from typing import Any

from apps.core.numbers import on_step, plain
from apps.exchanges.selectors import MarketQuote
from apps.strategies import REGISTRY
from apps.strategies.base import ZERO, Param, Strategy

# A unified spot symbol as ccxt writes it: BASE/QUOTE in capitals and digits (e.g. 1000SHIB/USDT).
SYMBOL = re.compile(r"[A-Z0-9]{1,20}/[A-Z0-9]{1,20}")
MEASURES = ("price", "base", "quote")


def param_field_name(strategy: type[Strategy], param: Param) -> str:
    """The form field of a strategy parameter: each strategy's own (`grid-lower`), so that every strategy's
    fields can be on the page at once and switching between them keeps what was typed in each."""
    return f"{strategy.key}-{param.name}"


def first_symbol(raw: object) -> str | None:
    """The first well-formed symbol of the symbols field as typed ("btc/usdt, eth/usdt" → BTC/USDT), if any."""
    head = str(raw or "").split(",", 1)[0].strip().upper()
    return head if SYMBOL.fullmatch(head) else None


def _text(value: Any) -> str:
    return plain(value) if isinstance(value, Decimal | int) and not isinstance(value, bool) else str(value)


def suggested_values(quote: MarketQuote | None) -> dict[str, str]:
    """Every strategy's values fitted to the market (its defaults when the market is unknown), by form field."""
    suggested: dict[str, str] = {}
    for strategy in REGISTRY.values():
        values = strategy.suggest(quote.price, quote.market) if quote else strategy.defaults()
        for param in strategy.params:
            suggested[param_field_name(strategy, param)] = _text(values[param.name])
    return suggested


def shown_price(quote: MarketQuote) -> Decimal:
    """The price on the market's tick (the middle of the book can fall between two ticks)."""
    return on_step(quote.price, quote.market.price_step)


def market_texts(quote: MarketQuote) -> dict[str, str]:
    """The sentences shown beside the fields: `summary` by the symbols, one per measure by the parameters."""
    m, price = quote.market, shown_price(quote)
    now = f"1 {m.base} = {plain(price)} {m.quote} now"
    rules = []
    if m.min_amount:
        rules.append(f"at least {plain(m.min_amount)} {m.base}")
    if m.min_notional:
        rules.append(f"worth at least {plain(m.min_notional)} {m.quote}")
    parts = [" and ".join(rules)] if rules else []
    steps = (("price tick", m.price_step), ("amount step", m.amount_step))
    parts += [f"{what} {plain(step)}" for what, step in steps if step]
    summary = f"{m.symbol} on {quote.exchange_id}: {now}." + (f" Each order: {'; '.join(parts)}." if parts else "")
    base = f"{now}."
    if rules:
        least = max(m.min_amount or ZERO, (m.min_notional or ZERO) / quote.price)
        least = on_step(least, m.amount_step, ROUND_UP)
        base = f"The exchange takes {' and '.join(rules)}: {plain(least)} {m.base} or more at {plain(price)}."
    quote_text = f"{now}."
    if m.min_notional:
        quote_text = f"At least {plain(m.min_notional)} {m.quote} per order; {now}."
    price_text = f"{m.symbol} is at {plain(price)} {m.quote} now" + (
        f"; prices go in ticks of {plain(m.price_step)}." if m.price_step else "."
    )
    return {"summary": summary, "price": price_text, "base": base, "quote": quote_text}


def market_json(quote: MarketQuote) -> dict[str, Any]:
    """The endpoint's answer: the figures, the sentences and the fitted values."""
    m = quote.market
    figures = {
        "price": quote.price,
        "min_amount": m.min_amount,
        "min_notional": m.min_notional,
        "price_step": m.price_step,
        "amount_step": m.amount_step,
    }
    return {
        "exchange": quote.exchange_id,
        "symbol": m.symbol,
        "base": m.base,
        "quote": m.quote,
        **{name: None if value is None else plain(value) for name, value in figures.items()},
        "texts": market_texts(quote),
        "defaults": suggested_values(quote),
    }
