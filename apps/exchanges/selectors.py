"""Reading exchange accounts and what their exchanges list."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.core.cache import cache
from django.db.models import QuerySet

from apps.exchanges import port
from apps.exchanges.models import ExchangeAccount

MARKETS_CACHE_S = 600


class UnlistedSymbolError(port.ExchangeError):
    """The exchange lists no active spot market of that symbol."""


@dataclass(frozen=True)
class MarketQuote:
    """One market of an exchange now: its rules for orders and its price (public data)."""

    exchange_id: str
    market: port.Market
    price: Decimal


def exchange_accounts() -> QuerySet[ExchangeAccount]:
    return ExchangeAccount.objects.order_by("label")


def exchange_markets(exchange_id: str) -> dict[str, port.Market]:
    """The active spot markets the exchange lists, by symbol (public data, cached ten minutes)."""
    cache_key = f"exchanges:markets:{exchange_id}"
    markets: dict[str, port.Market] | None = cache.get(cache_key)
    if markets is None:
        listed = port.Exchange(exchange_id=exchange_id).markets()
        markets = {symbol: market for symbol, market in listed.items() if market.spot and market.active}
        cache.set(cache_key, markets, MARKETS_CACHE_S)
    return markets


def exchange_symbols(account: ExchangeAccount) -> set[str]:
    """The spot symbols the account's exchange lists (public data, cached ten minutes)."""
    return set(exchange_markets(account.exchange_id))


def market_quote(*, exchange_id: str, symbol: str) -> MarketQuote:
    """The market's rules (cached) and its price now (read each time: it moves). UnlistedSymbolError when the
    exchange does not list it; ExchangeError when the exchange cannot be reached."""
    market = exchange_markets(exchange_id).get(symbol)
    if market is None:
        raise UnlistedSymbolError(f"{symbol} is not listed on {exchange_id}.")
    exchange = port.Exchange(exchange_id=exchange_id)
    try:
        price = exchange.price(symbol)
    finally:
        exchange.close()
    return MarketQuote(exchange_id=exchange_id, market=market, price=price)
