"""Reading exchange accounts and what their exchanges list."""

from __future__ import annotations

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
        markets = port.Exchange(exchange_id=account.exchange_id).markets()
        symbols = {symbol for symbol, market in markets.items() if market.spot and market.active}
        cache.set(cache_key, symbols, 600)
    return symbols
