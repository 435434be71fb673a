"""Validation of a new-order request, in Binance's order and with Binance's errors.

Filters (PRICE_FILTER, LOT_SIZE, NOTIONAL) fail with -1013 "Filter failure: <NAME>": ccxt
looks for the filter name in the body and raises InvalidOrder.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from apps.sandbox import errors
from apps.sandbox.decimals import is_multiple, parse
from apps.sandbox.state import Side
from apps.sandbox.symbols import ORDER_TYPES, SYMBOLS, TIME_IN_FORCE, SymbolSpec

CLIENT_ORDER_ID = re.compile(r"^[a-zA-Z0-9-_]{1,36}$")
# Every type Binance spot knows; the sandbox implements ORDER_TYPES of them.
BINANCE_ORDER_TYPES = (*ORDER_TYPES, "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
RESPONSE_TYPES = ("ACK", "RESULT", "FULL")


@dataclass(frozen=True)
class OrderRequest:
    spec: SymbolSpec
    side: Side
    type: str
    time_in_force: str
    quantity: Decimal | None
    quote_qty: Decimal | None
    price: Decimal | None
    client_order_id: str
    response_type: str


def required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if value == "":
        raise errors.mandatory(name)
    return value


def symbol_spec(params: Mapping[str, str]) -> SymbolSpec:
    spec = SYMBOLS.get(required(params, "symbol"))
    if spec is None:
        raise errors.invalid_symbol()
    return spec


def client_order_id(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not CLIENT_ORDER_ID.match(value):
        raise errors.illegal_characters(name, CLIENT_ORDER_ID.pattern)
    return value


def generated_client_order_id() -> str:
    # Binance makes up a 22-character id when the client sends none.
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(22))


def parse_new_order(params: Mapping[str, str], mid_price: Decimal) -> OrderRequest:
    spec = symbol_spec(params)
    side_raw = required(params, "side")
    if side_raw not in Side.__members__:
        raise errors.invalid_side()
    order_type = required(params, "type")
    if order_type not in BINANCE_ORDER_TYPES:
        raise errors.invalid_order_type()
    if order_type not in ORDER_TYPES:
        raise errors.order_type_not_supported()

    tif = params.get("timeInForce", "")
    if order_type == "LIMIT":
        tif = required(params, "timeInForce")
        if tif not in TIME_IN_FORCE:
            raise errors.invalid_tif()
    elif tif:
        raise errors.not_required("timeInForce")
    else:
        tif = "GTC"  # what Binance reports for MARKET and LIMIT_MAKER orders

    quantity = parse("quantity", params["quantity"]) if params.get("quantity") else None
    quote_qty = parse("quoteOrderQty", params["quoteOrderQty"]) if params.get("quoteOrderQty") else None
    price = parse("price", params["price"]) if params.get("price") else None
    if order_type == "MARKET":
        if quantity is None and quote_qty is None:
            raise errors.mandatory("quantity")
        if quantity is not None and quote_qty is not None:
            raise errors.bad_combination()
        if price is not None:
            raise errors.not_required("price")
    else:
        if quote_qty is not None:
            raise errors.not_required("quoteOrderQty")
        if quantity is None:
            raise errors.mandatory("quantity")
        if price is None:
            raise errors.mandatory("price")

    response_type = params.get("newOrderRespType") or ("FULL" if order_type in ("MARKET", "LIMIT") else "ACK")
    if response_type not in RESPONSE_TYPES:
        raise errors.invalid_value("newOrderRespType")

    if price is not None and (
        price < spec.min_price or price > spec.max_price or not is_multiple(price - spec.min_price, spec.tick_size)
    ):
        raise errors.filter_failure("PRICE_FILTER")
    if quantity is not None and (
        quantity < spec.min_qty or quantity > spec.max_qty or not is_multiple(quantity - spec.min_qty, spec.step_size)
    ):
        raise errors.filter_failure("LOT_SIZE")
    notional = quote_qty if quote_qty is not None else (quantity or Decimal(0)) * (price or mid_price)
    if notional < spec.min_notional:
        raise errors.filter_failure("NOTIONAL")

    return OrderRequest(
        spec=spec,
        side=Side(side_raw),
        type=order_type,
        time_in_force=tif,
        quantity=quantity,
        quote_qty=quote_qty,
        price=price,
        client_order_id=client_order_id(params, "newClientOrderId") or generated_client_order_id(),
        response_type=response_type,
    )
