"""Reading exchange accounts and what their exchanges list."""

from __future__ import annotations

from collections.abc import Iterable

from django.core.cache import cache
from django.db.models import QuerySet

from apps.exchanges import port
from apps.exchanges.models import ExchangeAccount


def exchange_accounts() -> QuerySet[ExchangeAccount]:
    return ExchangeAccount.objects.order_by("label")


def exchange_symbols(account: ExchangeAccount) -> set[str]:
    """The spot symbols the account's exchange lists (public data, cached ten minutes)."""
    cache_key = f"bots:symbols:{account.exchange_id}"
    symbols: set[str] | None = cache.get(cache_key)
    if symbols is None:
        exchange = port.Exchange(exchange_id=account.exchange_id)
        markets = exchange.markets()
        symbols = {symbol for symbol, market in markets.items() if market.spot and market.active}
        cache.set(cache_key, symbols, 600)
        # The same markets say how many decimals their amounts and prices have: kept for the pages.
        cache.set(_DECIMALS_KEY.format(account.exchange_id), exchange.market_decimals(), DECIMALS_TTL_S)
    return symbols


_DECIMALS_KEY = "exchanges:decimals:{}"
DECIMALS_TTL_S = 86_400


def market_decimals(pairs: Iterable[tuple[str, str]]) -> dict[str, tuple[int | None, int | None]]:
    """The (amount, price) decimals of each (exchange id, symbol) this process has loaded markets for.

    Pages call this: it never asks the exchange (a page must not wait on one), so a symbol whose markets
    were not loaded here lately is left out and shown without trailing zeros instead. Keyed by symbol; the
    first exchange listed wins where two bots trade one symbol on different exchanges.
    """
    found: dict[str, tuple[int | None, int | None]] = {}
    tables: dict[str, dict[str, tuple[int | None, int | None]] | None] = {}
    for exchange_id, symbol in pairs:
        if exchange_id not in tables:
            tables[exchange_id] = cache.get(_DECIMALS_KEY.format(exchange_id))
        table = tables[exchange_id]
        if table and symbol in table and symbol not in found:
            found[symbol] = table[symbol]
    return found
