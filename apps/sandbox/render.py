"""Binance's JSON shapes for orders, trades, balances and market data.

Field names and types follow Binance's spot API exactly (numbers as 8-decimal strings, times
as integer milliseconds) because ccxt parses these payloads field by field.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from apps.sandbox.decimals import ZERO, fmt
from apps.sandbox.feed import Candle, Market, PublicTrade
from apps.sandbox.state import Account, Fill, Order, Trade
from apps.sandbox.symbols import ASSETS, MAKER_RATE, TAKER_RATE

STP_MODE = "EXPIRE_MAKER"


def _state(o: Order) -> dict[str, Any]:
    """The fields every rendering of an order carries: its price, quantities, status and kind."""
    return {
        "price": fmt(o.price),
        "origQty": fmt(o.orig_qty),
        "executedQty": fmt(o.executed_qty),
        "origQuoteOrderQty": fmt(o.orig_quote_qty),
        "cummulativeQuoteQty": fmt(o.cumm_quote_qty),
        "status": o.status.value,
        "timeInForce": o.time_in_force,
        "type": o.type,
        "side": o.side.value,
    }


def order(o: Order) -> dict[str, Any]:
    """GET /api/v3/order (and the order entries of openOrders / allOrders)."""
    return {
        "symbol": o.symbol,
        "orderId": o.order_id,
        "orderListId": -1,
        "clientOrderId": o.client_order_id,
        **_state(o),
        "stopPrice": fmt(ZERO),
        "icebergQty": fmt(ZERO),
        "time": o.time,
        "updateTime": o.update_time,
        "isWorking": True,
        "workingTime": o.time,
        "selfTradePreventionMode": STP_MODE,
    }


def fill(f: Fill) -> dict[str, Any]:
    return {
        "price": fmt(f.price),
        "qty": fmt(f.qty),
        "commission": fmt(f.commission),
        "commissionAsset": f.commission_asset,
        "tradeId": f.trade_id,
    }


def new_order(o: Order, response_type: str) -> dict[str, Any]:
    """POST /api/v3/order in its ACK, RESULT or FULL form."""
    ack: dict[str, Any] = {
        "symbol": o.symbol,
        "orderId": o.order_id,
        "orderListId": -1,
        "clientOrderId": o.client_order_id,
        "transactTime": o.time,
    }
    if response_type == "ACK":
        return ack
    result = {
        **ack,
        **_state(o),
        "workingTime": o.time,
        "selfTradePreventionMode": STP_MODE,
    }
    if response_type == "FULL":
        result["fills"] = [fill(f) for f in o.fills]
    return result


def canceled(o: Order, cancel_client_id: str) -> dict[str, Any]:
    """DELETE /api/v3/order: clientOrderId is the cancel request's id, origClientOrderId the order's."""
    return {
        "symbol": o.symbol,
        "origClientOrderId": o.client_order_id,
        "orderId": o.order_id,
        "orderListId": -1,
        "clientOrderId": cancel_client_id,
        "transactTime": o.update_time,
        **_state(o),
        "selfTradePreventionMode": STP_MODE,
    }


def my_trade(t: Trade) -> dict[str, Any]:
    return {
        "symbol": t.symbol,
        "id": t.trade_id,
        "orderId": t.order_id,
        "orderListId": -1,
        "price": fmt(t.price),
        "qty": fmt(t.qty),
        "quoteQty": fmt(t.quote_qty),
        "commission": fmt(t.commission),
        "commissionAsset": t.commission_asset,
        "time": t.time,
        "isBuyer": t.is_buyer,
        "isMaker": t.is_maker,
        "isBestMatch": True,
    }


def uid(account: Account) -> int:
    return zlib.crc32(account.api_key.encode())


def account(a: Account, now_ms: int, omit_zero: bool) -> dict[str, Any]:
    assets = sorted(set(ASSETS) | set(a.balances))
    balances = []
    for asset in assets:
        b = a.balances.get(asset)
        free, locked = (b.free, b.locked) if b else (ZERO, ZERO)
        if omit_zero and free == 0 and locked == 0:
            continue
        balances.append({"asset": asset, "free": fmt(free), "locked": fmt(locked)})
    bips = int(MAKER_RATE * 10000)
    return {
        "makerCommission": bips,
        "takerCommission": int(TAKER_RATE * 10000),
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {
            "maker": fmt(MAKER_RATE),
            "taker": fmt(TAKER_RATE),
            "buyer": fmt(ZERO),
            "seller": fmt(ZERO),
        },
        "canTrade": a.permissions.can_trade,
        "canWithdraw": a.permissions.can_withdraw,
        "canDeposit": True,
        "brokered": False,
        "requireSelfTradePrevention": False,
        "preventSor": False,
        "updateTime": now_ms,
        "accountType": "SPOT",
        "balances": balances,
        "permissions": ["SPOT"],
        "uid": uid(a),
    }


def api_restrictions(a: Account) -> dict[str, Any]:
    p = a.permissions
    return {
        "ipRestrict": p.ip_restrict,
        "createTime": a.created_ms,
        "enableReading": p.can_read,
        "enableWithdrawals": p.can_withdraw,
        "enableInternalTransfer": False,
        "enableMargin": False,
        "enableFutures": False,
        "permitsUniversalTransfer": False,
        "enableVanillaOptions": False,
        "enableFixApiTrade": False,
        "enableFixReadOnly": False,
        "enableSpotAndMarginTrading": p.can_trade,
        "enablePortfolioMarginTrading": False,
    }


def levels(pairs: Iterable[tuple[Decimal, Decimal]]) -> list[list[str]]:
    return [[fmt(p), fmt(q)] for p, q in pairs]


def kline(c: Candle, interval_ms: int) -> list[Any]:
    return [
        c.open_time,
        fmt(c.open),
        fmt(c.high),
        fmt(c.low),
        fmt(c.close),
        fmt(c.volume),
        c.open_time + interval_ms - 1,
        fmt(c.quote_volume),
        c.trades,
        fmt(c.taker_buy_base),
        fmt(c.taker_buy_quote),
        "0",
    ]


def ticker_24h(m: Market, now_ms: int) -> dict[str, Any]:
    window = m.window(now_ms)
    first = window[0]
    last_price = m.last_price
    volume = sum((c.volume for c in window), ZERO)
    quote_volume = sum((c.quote_volume for c in window), ZERO)
    bid, ask = m.best()
    level_qty = m.spec.level_qty
    last_trade = m.last_trade
    change = last_price - first.open
    return {
        "symbol": m.spec.symbol,
        "priceChange": fmt(change),
        "priceChangePercent": f"{(change / first.open * 100):.3f}",
        "weightedAvgPrice": fmt(quote_volume / volume if volume else last_price),
        "prevClosePrice": fmt(first.open),
        "lastPrice": fmt(last_price),
        "lastQty": fmt(last_trade.qty if last_trade else ZERO),
        "bidPrice": fmt(bid),
        "bidQty": fmt(level_qty),
        "askPrice": fmt(ask),
        "askQty": fmt(level_qty),
        "openPrice": fmt(first.open),
        "highPrice": fmt(max(c.high for c in window)),
        "lowPrice": fmt(min(c.low for c in window)),
        "volume": fmt(volume),
        "quoteVolume": fmt(quote_volume),
        "openTime": first.open_time,
        "closeTime": now_ms,
        "firstId": m.next_trade_id - sum(c.trades for c in window),
        "lastId": m.next_trade_id - 1,
        "count": sum(c.trades for c in window),
    }


def book_ticker(m: Market) -> dict[str, Any]:
    bid, ask = m.best()
    return {
        "symbol": m.spec.symbol,
        "bidPrice": fmt(bid),
        "bidQty": fmt(m.spec.level_qty),
        "askPrice": fmt(ask),
        "askQty": fmt(m.spec.level_qty),
    }


def public_trade(t: PublicTrade) -> dict[str, Any]:
    return {
        "id": t.trade_id,
        "price": fmt(t.price),
        "qty": fmt(t.qty),
        "quoteQty": fmt(t.price * t.qty),
        "time": t.time,
        "isBuyerMaker": t.buyer_is_maker,
        "isBestMatch": True,
    }


def agg_trade(t: PublicTrade) -> dict[str, Any]:
    return {
        "a": t.trade_id,
        "p": fmt(t.price),
        "q": fmt(t.qty),
        "f": t.trade_id,
        "l": t.trade_id,
        "T": t.time,
        "m": t.buyer_is_maker,
        "M": True,
    }
