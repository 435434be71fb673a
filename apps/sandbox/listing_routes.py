"""What an unmodified ccxt binance asks while loading markets, beyond spot trading.

With its default options (as Freqtrade and most ccxt users run it) `load_markets` also fetches the
coins and their networks (`/sapi/v1/capital/config/getall`), the margin pairs (`/sapi/v1/margin/allPairs`,
`/sapi/v1/margin/isolated/allPairs`) and the futures markets (`/fapi/v1/exchangeInfo`,
`/dapi/v1/exchangeInfo`). The sandbox trades spot only, so it lists no margin pair and no futures market;
its coins have one or two networks each, with deposits and withdrawals off (the sandbox moves no funds).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from apps.sandbox.decimals import fmt
from apps.sandbox.routes import reply, sandbox_of, signed
from apps.sandbox.state import Account
from apps.sandbox.symbols import ASSETS

NO_TRANSFERS = "The sandbox exchange has no deposits or withdrawals."
EVM_ADDRESS = "^(0x)[0-9A-Fa-f]{40}$"
# coin -> (name, [(network, network name, withdraw fee, withdraw min, address regex, confirmations)])
COINS: dict[str, tuple[str, list[tuple[str, str, str, str, str, int]]]] = {
    "BTC": ("Bitcoin", [("BTC", "Bitcoin", "0.0002", "0.001", "^(bc1|[13])[a-zA-HJ-NP-Z0-9]{25,62}$", 1)]),
    "ETH": ("Ethereum", [("ETH", "Ethereum (ERC20)", "0.0016", "0.01", EVM_ADDRESS, 64)]),
    "SOL": ("Solana", [("SOL", "Solana", "0.008", "0.1", "^[1-9A-HJ-NP-Za-km-z]{32,44}$", 1)]),
    "USDT": (
        "TetherUS",
        [
            ("ETH", "Ethereum (ERC20)", "4", "10", EVM_ADDRESS, 64),
            ("TRX", "Tron (TRC20)", "1", "10", "^T[1-9A-HJ-NP-Za-km-z]{33}$", 20),
        ],
    ),
}


def network(coin: str, row: tuple[str, str, str, str, str, int], is_default: bool) -> dict[str, Any]:
    net, name, fee, minimum, regex, confirmations = row
    return {
        "network": net,
        "coin": coin,
        "withdrawIntegerMultiple": "0.00000001",
        "isDefault": is_default,
        "depositEnable": False,
        "withdrawEnable": False,
        "depositDesc": NO_TRANSFERS,
        "withdrawDesc": NO_TRANSFERS,
        "specialTips": "",
        "specialWithdrawTips": "",
        "name": name,
        "resetAddressStatus": False,
        "addressRegex": regex,
        "addressRule": "",
        "memoRegex": "",
        "withdrawFee": fee,
        "withdrawMin": minimum,
        "withdrawMax": "10000000000",
        "depositDust": "0.00000001",
        "minConfirm": confirmations,
        "unLockConfirm": 0,
        "sameAddress": False,
        "estimatedArrivalTime": 5,
        "busy": False,
    }


def coin_info(account: Account, coin: str) -> dict[str, Any]:
    name, networks = COINS.get(coin, (coin, []))
    balance = account.balances.get(coin)
    return {
        "coin": coin,
        "depositAllEnable": False,
        "withdrawAllEnable": False,
        "name": name,
        "free": fmt(balance.free) if balance else "0",
        "locked": fmt(balance.locked) if balance else "0",
        "freeze": "0",
        "withdrawing": "0",
        "ipoing": "0",
        "ipoable": "0",
        "storage": "0",
        "isLegalMoney": False,
        "trading": True,
        "networkList": [network(coin, row, i == 0) for i, row in enumerate(networks)],
    }


async def capital_config(request: web.Request) -> web.Response:
    account, _ = await signed(request, None)
    return reply([coin_info(account, coin) for coin in sorted(set(ASSETS) | set(account.balances))])


async def no_margin_pairs(request: web.Request) -> web.Response:
    await signed(request, None)
    return reply([])


def futures_info(futures_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return reply(
            {
                "timezone": "UTC",
                "serverTime": sandbox_of(request).server_now(),
                "futuresType": futures_type,
                "rateLimits": [],
                "exchangeFilters": [],
                "assets": [],
                "symbols": [],
            }
        )

    return handler


def setup(app: web.Application) -> None:
    app.router.add_get("/sapi/v1/capital/config/getall", capital_config)
    app.router.add_get("/sapi/v1/margin/allPairs", no_margin_pairs)
    app.router.add_get("/sapi/v1/margin/isolated/allPairs", no_margin_pairs)
    app.router.add_get("/fapi/v1/exchangeInfo", futures_info("U_MARGINED"))
    app.router.add_get("/dapi/v1/exchangeInfo", futures_info("COIN_MARGINED"))
