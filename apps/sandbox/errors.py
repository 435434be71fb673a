"""Binance's error answers: `{"code": -XXXX, "msg": "..."}` with Binance's HTTP status.

The codes and messages are Binance's own because ccxt maps them to its exception classes by
code and, for some, by exact message (e.g. insufficient balance -> InsufficientFunds).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class BinanceError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg}


def unknown_error(msg: str, status: int = 400) -> BinanceError:
    return BinanceError(-1000, msg, status)


def too_many_requests(limit: int, retry_after_s: int) -> BinanceError:
    return BinanceError(
        -1003,
        f"Too many requests; current limit is {limit} requests per minute. "
        "Please use the websocket for live updates to avoid polling the API.",
        429,
        {"Retry-After": str(retry_after_s)},
    )


def unsupported_operation(what: str) -> BinanceError:
    return BinanceError(-1020, f"This operation is not supported: {what}.")


def timestamp_ahead() -> BinanceError:
    return BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")


def timestamp_outside_window() -> BinanceError:
    return BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")


def bad_signature() -> BinanceError:
    return BinanceError(-1022, "Signature for this request is not valid.")


def illegal_characters(param: str, legal: str) -> BinanceError:
    return BinanceError(-1100, f"Illegal characters found in parameter '{param}'; legal range is '{legal}'.")


def duplicate_parameter(param: str) -> BinanceError:
    return BinanceError(-1101, f"Duplicate values for parameter '{param}'.")


def mandatory(param: str) -> BinanceError:
    return BinanceError(-1102, f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed.")


def not_required(param: str) -> BinanceError:
    return BinanceError(-1106, f"Parameter '{param}' sent when not required.")


def bad_precision(param: str) -> BinanceError:
    return BinanceError(-1111, f"Parameter '{param}' has too much precision.")


def invalid_tif() -> BinanceError:
    return BinanceError(-1115, "Invalid timeInForce.")


def invalid_order_type() -> BinanceError:
    return BinanceError(-1116, "Invalid orderType.")


def invalid_side() -> BinanceError:
    return BinanceError(-1117, "Invalid side.")


def invalid_interval() -> BinanceError:
    return BinanceError(-1120, "Invalid interval.")


def invalid_symbol() -> BinanceError:
    return BinanceError(-1121, "Invalid symbol.")


def bad_combination() -> BinanceError:
    return BinanceError(-1128, "Combination of optional parameters invalid.")


def invalid_value(param: str) -> BinanceError:
    return BinanceError(-1130, f"Data sent for parameter '{param}' is not valid.")


def recv_window_too_large() -> BinanceError:
    return BinanceError(-1131, "recvWindow must be less than 60000")


def filter_failure(name: str) -> BinanceError:
    return BinanceError(-1013, f"Filter failure: {name}")


def order_type_not_supported() -> BinanceError:
    return BinanceError(-1013, "Order type not supported for this symbol.")


def new_order_rejected(msg: str) -> BinanceError:
    return BinanceError(-2010, msg)


def duplicate_order() -> BinanceError:
    return new_order_rejected("Duplicate order sent.")


def insufficient_balance() -> BinanceError:
    # The exact text matters: ccxt maps it to InsufficientFunds by message.
    return new_order_rejected("Account has insufficient balance for requested action.")


def would_take() -> BinanceError:
    return new_order_rejected("Order would immediately match and take.")


def unknown_order() -> BinanceError:
    return BinanceError(-2011, "Unknown order sent.")


def no_such_order() -> BinanceError:
    return BinanceError(-2013, "Order does not exist.")


def key_format_invalid() -> BinanceError:
    return BinanceError(-2014, "API-key format invalid.", 401)


def key_rejected() -> BinanceError:
    return BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
