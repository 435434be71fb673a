"""The sandbox's spot markets and their `exchangeInfo` entries.

Tick and step sizes are chosen so that price * quantity never needs more than 8 decimals:
balances then stay exact, like Binance's.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# Only the types the engine implements: ccxt refuses other types client-side (InvalidOrder)
# because it checks `orderTypes` before sending.
ORDER_TYPES = ("LIMIT", "LIMIT_MAKER", "MARKET")
TIME_IN_FORCE = ("GTC", "IOC", "FOK")
MAKER_RATE = Decimal("0.001")
TAKER_RATE = Decimal("0.001")


@dataclass(frozen=True)
class SymbolSpec:
    symbol: str
    base: str
    quote: str
    start_price: Decimal
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    # Synthetic liquidity: the quantity at the best level of the book, and what a crossed
    # resting order can fill per price move. Deeper levels hold multiples of it.
    level_qty: Decimal
    # Standard deviation of one price move's log return.
    volatility: float
    min_price: Decimal = Decimal("0.00000001")
    max_price: Decimal = Decimal("1000000")

    @property
    def lowercase(self) -> str:
        return self.symbol.lower()


SYMBOLS: dict[str, SymbolSpec] = {
    spec.symbol: spec
    for spec in (
        SymbolSpec(
            "BTCUSDT",
            "BTC",
            "USDT",
            Decimal("60000.00"),
            Decimal("0.01"),
            Decimal("0.00001"),
            Decimal("0.00001"),
            Decimal("9000"),
            Decimal("5"),
            Decimal("0.02"),
            0.0004,
            min_price=Decimal("0.01"),
        ),
        SymbolSpec(
            "ETHUSDT",
            "ETH",
            "USDT",
            Decimal("3000.00"),
            Decimal("0.01"),
            Decimal("0.0001"),
            Decimal("0.0001"),
            Decimal("9000"),
            Decimal("5"),
            Decimal("0.5"),
            0.0005,
            min_price=Decimal("0.01"),
        ),
        SymbolSpec(
            "SOLUSDT",
            "SOL",
            "USDT",
            Decimal("150.00"),
            Decimal("0.01"),
            Decimal("0.001"),
            Decimal("0.001"),
            Decimal("90000"),
            Decimal("5"),
            Decimal("10"),
            0.0006,
            min_price=Decimal("0.01"),
        ),
        SymbolSpec(
            "ETHBTC",
            "ETH",
            "BTC",
            Decimal("0.05000"),
            Decimal("0.00001"),
            Decimal("0.001"),
            Decimal("0.001"),
            Decimal("100000"),
            Decimal("0.0001"),
            Decimal("0.5"),
            0.0003,
            min_price=Decimal("0.00001"),
            max_price=Decimal("922327"),
        ),
    )
}

ASSETS: tuple[str, ...] = tuple(sorted({s.base for s in SYMBOLS.values()} | {s.quote for s in SYMBOLS.values()}))


def _num(value: Decimal) -> str:
    return f"{value:.8f}"


def symbol_info(spec: SymbolSpec) -> dict[str, Any]:
    return {
        "symbol": spec.symbol,
        "status": "TRADING",
        "baseAsset": spec.base,
        "baseAssetPrecision": 8,
        "quoteAsset": spec.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": list(ORDER_TYPES),
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "amendAllowed": False,
        "pegInstructionsAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": _num(spec.min_price),
                "maxPrice": _num(spec.max_price),
                "tickSize": _num(spec.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": _num(spec.min_qty),
                "maxQty": _num(spec.max_qty),
                "stepSize": _num(spec.step_size),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": _num(spec.min_qty),
                "maxQty": _num(spec.max_qty),
                "stepSize": _num(spec.step_size),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": _num(spec.min_notional),
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def exchange_info(server_time: int, symbols: list[SymbolSpec], requests_per_minute: int) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "serverTime": server_time,
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": requests_per_minute},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
        ],
        "exchangeFilters": [],
        "symbols": [symbol_info(spec) for spec in symbols],
    }
