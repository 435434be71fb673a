"""Point a ccxt binance client at the sandbox exchange (dev/test only).

    exchange = ccxt.binance({"apiKey": key, "secret": secret})
    point_at_sandbox(exchange, "http://127.0.0.1:8765")

Works the same for `ccxt.binance`, `ccxt.async_support.binance` and `ccxt.pro.binance`.
EVERY URL of the client is rewritten, not only the spot ones: a call the sandbox does not
implement (futures, options, ...) then fails with a clear 404 from the sandbox instead of
reaching the real Binance with test keys. That includes the `test`/`demo` URL sets, so
`set_sandbox_mode(True)` cannot escape either.

The dead-man's switch (`POST /api/v3/countdownCancelAll`, sandbox-only on spot) has no ccxt
method for binance spot: ccxt's binance has no `cancel_all_orders_after`, and its implicit
`*PostCountdownCancelAll` methods exist only for fapi/dapi/eapi. Call it through ccxt's
signed request path instead:

    exchange.request("countdownCancelAll", ["private"], "POST", {"symbol": "BTCUSDT", "countdownTime": 1500})

(`await` it on the async clients; omit `symbol` to cover every symbol; `countdownTime` 0 disables.)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

# The sandbox answers what a default client loads too (coins and networks, no margin pairs, no
# futures markets: apps.sandbox.listing_routes), so `rewrite_urls` alone is enough, as for a tool
# that only lets its users change URLs. These options spare load_markets five of its seven requests.
SANDBOX_OPTIONS: dict[str, Any] = {
    "fetchCurrencies": False,
    "fetchMarkets": {"types": ["spot"]},
    "fetchMargins": False,
}
URL_SETS = ("api", "test", "demo")


class CcxtExchange(Protocol):
    urls: Any
    options: Any


def _rewrite(value: Any, http_base: str, ws_base: str) -> Any:
    if isinstance(value, Mapping):
        return {key: _rewrite(item, http_base, ws_base) for key, item in value.items()}
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme in ("http", "https"):
            return http_base + parts.path + (f"?{parts.query}" if parts.query else "")
        if parts.scheme in ("ws", "wss"):
            return ws_base + parts.path + (f"?{parts.query}" if parts.query else "")
    return value


def sandbox_urls(base_url: str) -> tuple[str, str]:
    """The HTTP and websocket bases for a sandbox at `base_url` (http://host:port)."""
    parts = urlsplit(base_url.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the sandbox base URL must be http(s)://host:port, not {base_url!r}")
    ws_scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{parts.scheme}://{parts.netloc}{parts.path}", f"{ws_scheme}://{parts.netloc}{parts.path}"


def rewrite_urls(exchange: CcxtExchange, base_url: str) -> None:
    """Rewrite every REST and websocket URL of a ccxt binance client to the sandbox at `base_url`, only that."""
    http_base, ws_base = sandbox_urls(base_url)
    for name in URL_SETS:
        urls = exchange.urls.get(name)
        if isinstance(urls, Mapping):
            exchange.urls[name] = _rewrite(urls, http_base, ws_base)


def point_at_sandbox(exchange: CcxtExchange, base_url: str) -> None:
    """`rewrite_urls`, and load spot markets only (SANDBOX_OPTIONS)."""
    rewrite_urls(exchange, base_url)
    exchange.options.update(copy.deepcopy(SANDBOX_OPTIONS))
