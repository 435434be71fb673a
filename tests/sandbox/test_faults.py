"""The sandbox's fault switches (apps.sandbox.faults), seen through the real ccxt client.

The session's sandbox is shared: REST faults here are narrowed to the test's own key, and every switch is
cleared after each test.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import ccxt
import ccxt.pro
import pytest

from apps.sandbox.admin import SandboxAdminError
from apps.sandbox.ccxt_config import point_at_sandbox
from tests.fixtures.sandbox import SandboxProcess
from tests.sandbox.conftest import make_binance

SYMBOL = "BTC/USDT"


@pytest.fixture(autouse=True)
def faults_cleared(sandbox: SandboxProcess) -> Iterator[None]:
    assert sandbox.admin.faults().active == {}, "a fault was left on"
    yield
    sandbox.admin.clear_faults()


def client(sandbox: SandboxProcess, key: tuple[str, str], timeout_ms: int | None = None) -> ccxt.binance:
    exchange = make_binance(sandbox, *key)
    if timeout_ms is not None:
        exchange.timeout = timeout_ms
    exchange.load_markets()
    return exchange


def resting_buy(exchange: ccxt.binance, client_order_id: str, amount: float = 0.01) -> dict[str, Any]:
    price = float(exchange.price_to_precision(SYMBOL, exchange.fetch_ticker(SYMBOL)["bid"] * 0.8))
    order: dict[str, Any] = exchange.create_order(
        SYMBOL, "limit", "buy", amount, price, {"clientOrderId": client_order_id}
    )
    return order


def test_no_fault_is_on_by_default_and_clearing_restores_normal_service(
    sandbox: SandboxProcess, sandbox_key: tuple[str, str]
) -> None:
    admin, api_key = sandbox.admin, sandbox_key[0]
    exchange = client(sandbox, sandbox_key)
    assert exchange.fetch_balance()["USDT"]["free"] == 10000
    assert abs(exchange.fetch_time() - exchange.milliseconds()) < 1000  # no clock offset
    limited_before = admin.faults().count("rate_limit")  # other tests of this session may have counted some

    admin.delay_requests(1, api_key=api_key)
    admin.fail_requests(503, count=5, api_key=api_key)
    admin.rate_limit_burst(seconds=60, api_key=api_key)
    admin.timeout_after_accept(2, api_key=api_key)
    admin.set_clock_offset(5000)
    view = admin.drop_websockets("market", refuse_s=60)
    assert set(view.active) == {"delay", "error", "rate_limit", "timeout_after_accept", "clock_offset", "websockets"}
    assert (view.active["error"]["status"], view.active["error"]["count"]) == (503, 5)

    assert set(admin.clear_faults("error").active) == set(view.active) - {"error"}
    with pytest.raises(ccxt.DDoSProtection):
        exchange.fetch_balance()
    cleared = admin.clear_faults()
    assert cleared.active == {} and cleared.count("rate_limit") == limited_before + 1  # counts stay until a reset

    assert exchange.fetch_balance()["USDT"]["free"] == 10000
    assert abs(exchange.fetch_time() - exchange.milliseconds()) < 1000
    order = resting_buy(exchange, f"ok{uuid.uuid4().hex[:16]}")
    assert exchange.cancel_order(order["id"], SYMBOL)["status"] == "canceled"


def test_delay_slows_matching_answers_past_the_client_timeout(
    sandbox: SandboxProcess, sandbox_key: tuple[str, str]
) -> None:
    admin, api_key = sandbox.admin, sandbox_key[0]
    before = admin.faults().count("delay")
    admin.delay_requests(2000, path_prefix="/api/v3/account", api_key=api_key)
    impatient = client(sandbox, sandbox_key, timeout_ms=500)
    assert impatient.fetch_ticker(SYMBOL)["bid"] > 0  # another path: not delayed
    with pytest.raises(ccxt.RequestTimeout):
        impatient.fetch_balance()
    admin.delay_requests(200, path_prefix="/api/v3/account", api_key=api_key, count=1)
    assert client(sandbox, sandbox_key).fetch_balance()["USDT"]["free"] == 10000  # late, but answered
    view = admin.faults()
    assert view.count("delay") == before + 2 and "delay" not in view.active  # its one count used
    assert [(e["path"], e["ms"]) for e in view.logged("delay")[-2:]] == [
        ("/api/v3/account", 2000),
        ("/api/v3/account", 200),
    ]


@pytest.mark.parametrize(
    ("status", "body", "raised"),
    [
        (500, None, ccxt.OperationFailed),  # Binance's {"code":-1000}: ccxt maps the code
        (502, None, ccxt.ExchangeNotAvailable),  # a gateway's page: ccxt maps the status
        (503, "json", ccxt.ExchangeError),  # Binance's {"code":-1008}
        (503, "html", ccxt.ExchangeNotAvailable),
    ],
)
def test_error_answers_the_next_requests_with_5xx_without_doing_them(
    sandbox: SandboxProcess, sandbox_key: tuple[str, str], status: int, body: str | None, raised: type
) -> None:
    admin, api_key = sandbox.admin, sandbox_key[0]
    exchange = client(sandbox, sandbox_key)
    before = admin.faults().count("error")
    received = admin.order_count().for_key(api_key)
    admin.fail_requests(status, body=body, count=2, api_key=api_key)
    with pytest.raises(raised) as caught:
        resting_buy(exchange, f"e{uuid.uuid4().hex[:16]}")
    assert isinstance(caught.value, ccxt.NetworkError) == (raised is ccxt.ExchangeNotAvailable)
    with pytest.raises(raised):
        exchange.fetch_balance()

    assert admin.orders(api_key) == [] and admin.order_count().for_key(api_key) == received  # never reached
    assert exchange.fetch_balance()["USDT"]["free"] == 10000  # the count is spent: normal again
    view = admin.faults()
    assert view.count("error") == before + 2 and "error" not in view.active
    assert [e["status"] for e in view.logged("error")[-2:]] == [status, status]


def test_error_by_fraction_faults_about_that_share_until_its_count_is_spent(
    sandbox: SandboxProcess, sandbox_key: tuple[str, str]
) -> None:
    admin, api_key = sandbox.admin, sandbox_key[0]
    exchange = client(sandbox, sandbox_key)
    admin.fail_requests(502, fraction=0.5, count=2, api_key=api_key)
    outcomes = []
    for _ in range(16):  # fewer than 2 faults in 16 draws at 1/2: p < 0.0003
        try:
            exchange.fetch_open_orders(SYMBOL)
            outcomes.append("ok")
        except ccxt.ExchangeNotAvailable:
            outcomes.append("502")
    assert outcomes.count("502") == 2 and "error" not in admin.faults().active


def test_timeout_after_accept_places_the_order_and_a_retry_adopts_it(
    sandbox: SandboxProcess, sandbox_key: tuple[str, str]
) -> None:
    admin, api_key = sandbox.admin, sandbox_key[0]
    exchange = client(sandbox, sandbox_key, timeout_ms=1000)
    admin.timeout_after_accept(2, hold_ms=3000, api_key=api_key)

    with pytest.raises(ccxt.InsufficientFunds):  # refused orders are answered at once, budget kept
        exchange.create_order(SYMBOL, "limit", "buy", 1, 50000)
    held, dropped = f"h{uuid.uuid4().hex[:16]}", f"d{uuid.uuid4().hex[:16]}"
    with pytest.raises(ccxt.RequestTimeout):
        resting_buy(exchange, held)
    admin.timeout_after_accept(1, drop=True, api_key=api_key)
    with pytest.raises(ccxt.NetworkError) as caught:
        resting_buy(exchange, dropped)
    assert not isinstance(caught.value, ccxt.RequestTimeout)  # the connection closed unanswered

    logged = admin.faults().logged("timeout_after_accept")[-2:]
    assert [(e["client_order_id"], e["dropped"]) for e in logged] == [(held, False), (dropped, True)]
    for entry in logged:
        cid = entry["client_order_id"]
        with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
            resting_buy(exchange, cid)  # the retry: refused, the exchange has it
        adopted = exchange.fetch_order(None, SYMBOL, {"clientOrderId": cid})
        assert (adopted["id"], adopted["status"], adopted["amount"]) == (str(entry["order_id"]), "open", 0.01)
    assert [o["clientOrderId"] for o in admin.open_orders(api_key)] == [held, dropped]
    assert "timeout_after_accept" not in admin.faults().active


def test_rate_limit_answers_429_with_retry_after_for_one_key_only(
    sandbox: SandboxProcess, sandbox_key: tuple[str, str]
) -> None:
    admin, api_key = sandbox.admin, sandbox_key[0]
    exchange = client(sandbox, sandbox_key)
    other = sandbox.new_key()
    admin.rate_limit_burst(count=2, retry_after_s=7, api_key=api_key)
    for _ in range(2):
        with pytest.raises(ccxt.DDoSProtection) as caught:
            exchange.fetch_balance()
        assert '"code":-1003' in str(caught.value)
        assert exchange.last_response_headers["Retry-After"] == "7"
    assert client(sandbox, (other.api_key, other.secret)).fetch_balance()["BTC"]["free"] == 1  # not that key
    assert exchange.fetch_balance()["USDT"]["free"] == 10000

    admin.rate_limit_burst(seconds=1, api_key=api_key)
    with pytest.raises(ccxt.DDoSProtection):
        exchange.fetch_balance()
    assert int(exchange.last_response_headers["Retry-After"]) == 1
    assert admin.faults().count("rate_limit") >= 3


def test_clock_offset_gives_minus_1021_until_the_client_syncs_its_time(
    sandbox: SandboxProcess, sandbox_key: tuple[str, str]
) -> None:
    admin = sandbox.admin
    exchange = client(sandbox, sandbox_key)
    before = admin.faults().count("clock_offset")
    admin.set_clock_offset(-2000)  # the client's clock 2 s ahead of the exchange's
    with pytest.raises(ccxt.InvalidNonce, match="ahead of the server's time"):
        exchange.fetch_balance()
    admin.set_clock_offset(70_000)  # 70 s behind
    with pytest.raises(ccxt.InvalidNonce, match="outside of the recvWindow"):
        exchange.fetch_balance()
    assert 69_000 < exchange.fetch_time() - exchange.milliseconds() < 71_000
    assert 69_000 < admin.health()["server_time"] - exchange.milliseconds() < 71_000

    assert -71_000 < exchange.load_time_difference() < -69_000  # ccxt's own fix
    assert exchange.fetch_balance()["USDT"]["free"] == 10000
    assert admin.faults().count("clock_offset") == before + 2


def test_dropping_websockets_closes_them_and_refusing_keeps_them_out(
    sandbox: SandboxProcess, sandbox_key: tuple[str, str]
) -> None:
    admin = sandbox.admin

    async def scenario() -> None:
        exchange = ccxt.pro.binance({"apiKey": sandbox_key[0], "secret": sandbox_key[1]})
        point_at_sandbox(exchange, sandbox.url)
        ticker = {"name": "ticker"}
        try:
            await exchange.load_markets()
            await exchange.watch_ticker(SYMBOL, ticker)
            orders = asyncio.ensure_future(exchange.watch_orders(SYMBOL))
            await asyncio.sleep(0.3)  # subscribed
            dropped = (await asyncio.to_thread(admin.drop_websockets, "user")).dropped
            assert dropped == 1
            with pytest.raises(ccxt.NetworkError, match="closing code 1001"):
                await asyncio.wait_for(orders, 5)
            assert (await asyncio.wait_for(exchange.watch_ticker(SYMBOL, ticker), 5))["bid"]  # market: untouched

            pending = asyncio.ensure_future(exchange.watch_ticker(SYMBOL, ticker))
            await asyncio.to_thread(admin.drop_websockets, "all", refuse_s=1, abrupt=True)
            with pytest.raises(ccxt.NetworkError, match="closing code 1006"):
                await asyncio.wait_for(pending, 5)
            with pytest.raises(ccxt.NetworkError, match="503"):
                await asyncio.wait_for(exchange.watch_ticker(SYMBOL, ticker), 5)
            await asyncio.sleep(1.1)  # the refusal ran out
            assert (await asyncio.wait_for(exchange.watch_ticker(SYMBOL, ticker), 5))["ask"]
        finally:
            await exchange.close()

    before = admin.faults().counts
    asyncio.run(scenario())
    after = admin.faults()
    assert after.count("websockets_dropped") == before.get("websockets_dropped", 0) + 2
    assert after.count("websockets_refused") == before.get("websockets_refused", 0) + 1
    assert "websockets" not in after.active


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("delay", {"ms": "slow"}, "ms must be an integer from 1 to 120000"),
        ("delay", {"ms": 0}, "ms must be an integer"),
        ("delay", {}, "delay needs ms"),
        ("delay", {"ms": 10, "speed": 2}, "delay has no setting 'speed'"),
        ("error", {"status": 404, "count": 1}, "status must be one of 500, 502, 503"),
        ("error", {"status": 503}, "needs count, seconds or fraction"),
        ("error", {"status": 503, "fraction": 1.5}, "fraction must be a number above 0 and at most 1"),
        ("error", {"status": 503, "count": True}, "count must be an integer"),
        ("error", {"status": 500, "count": 1, "body": "xml"}, "body must be one of"),
        ("rate_limit", {"count": 1, "method": "PATCH"}, "method must be one of"),
        ("rate_limit", {"count": 1, "path_prefix": "api/v3"}, "path_prefix must be a path starting with '/'"),
        ("rate_limit", {"seconds": -1}, "seconds must be a number above 0"),
        ("timeout_after_accept", {"count": 1, "path_prefix": "/api"}, "has no setting 'path_prefix'"),
        ("timeout_after_accept", {"count": 1, "hold_ms": 10**9}, "hold_ms must be an integer"),
        ("timeout_after_accept", {"count": 1, "api_key": "x" * 10}, "api_key must be a 64-character API key"),
        ("websockets", {"kind": "spot"}, "kind must be one of 'all', 'market', 'user'"),
        ("websockets", {"refuse_s": "1"}, "refuse_s must be an integer"),
        ("clock_offset", {"ms": 10**12}, "ms must be an integer from -86400000 to 86400000"),
    ],
)
def test_bad_settings_are_refused_with_400_and_change_nothing(
    sandbox: SandboxProcess, name: str, settings: dict[str, Any], message: str
) -> None:
    admin = sandbox.admin
    admin.delay_requests(5, path_prefix="/api/v3/nothing-here")
    admin.set_clock_offset(1)
    before = admin.faults()
    with pytest.raises(SandboxAdminError) as caught:
        admin.set_fault(name, **settings)
    assert caught.value.status == 400 and message in str(caught.value)
    after = admin.faults()
    assert (after.active, after.counts) == (before.active, before.counts)
    assert after.active["delay"]["ms"] == 5 and after.active["clock_offset"] == {"ms": 1}


def test_unknown_faults_and_bodies_that_are_not_json_objects_are_refused(sandbox: SandboxProcess) -> None:
    with pytest.raises(SandboxAdminError) as caught:
        sandbox.admin.set_fault("earthquake", count=1)
    assert caught.value.status == 404 and "the faults are: delay, error" in str(caught.value)
    with pytest.raises(SandboxAdminError) as caught:
        sandbox.admin.clear_faults("earthquake")
    assert caught.value.status == 404
    for raw in (b"{not json", b"[1, 2]"):
        request = urllib.request.Request(f"{sandbox.url}/_sandbox/faults/delay", data=raw, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 400 and "error" in json.loads(refused.value.read())
    assert sandbox.admin.faults().active == {}
