"""The sandbox exchange's aiohttp server (dev/test only): routes, background loops, lifecycle.

One process, one asyncio loop: the price walk of each symbol, the countdown checker and every
request run on it, so the state needs no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable

from aiohttp import WSCloseCode, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from apps.sandbox import admin_routes, fault_inject, fault_routes, listing_routes, routes, ws
from apps.sandbox.context import SANDBOX, Sandbox
from apps.sandbox.symbols import SYMBOLS

logger = logging.getLogger("apps.sandbox")
COUNTDOWN_CHECK_S = 0.05
PARENT_CHECK_S = 1.0


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Method, path and status; never the query string, the body or headers (keys, signatures)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1fms", request.method, request.path, response.status, time * 1000)


async def drive_symbol(sandbox: Sandbox, symbol: str) -> None:
    options = sandbox.options
    while True:
        await asyncio.sleep(sandbox.feed.next_delay(symbol, options.min_move_s, options.max_move_s))
        try:
            # Looked up each time: a reset replaces the markets.
            market = sandbox.feed.market(symbol)
            if market.held:
                continue
            market.move()
            for trade in market.noise_trades(sandbox.now()):
                sandbox.hub.public_trade(symbol, trade)
            sandbox.engine.match_resting(symbol)
            sandbox.hub.market_moved(symbol)
        except Exception:
            # A bug in one step must not freeze the market for the rest of the run.
            logger.exception("price move of %s failed", symbol)


async def drive_countdowns(sandbox: Sandbox) -> None:
    while True:
        await asyncio.sleep(COUNTDOWN_CHECK_S)
        try:
            canceled = sandbox.engine.run_countdowns()
            if canceled:
                logger.info("countdown fired: %d open orders canceled", canceled)
        except Exception:
            logger.exception("countdown check failed")


def build_app(sandbox: Sandbox) -> web.Application:
    # Faults act before Binance's own error handling: a faulted answer is the gateway's, not the API's.
    app = web.Application(
        middlewares=[admin_routes.admin_guard, fault_inject.inject, routes.binance_errors, routes.rate_limited]
    )
    app[SANDBOX] = sandbox
    routes.setup(app)
    listing_routes.setup(app)
    admin_routes.setup(app)
    fault_routes.setup(app)
    ws.setup(app)

    async def background(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(drive_symbol(sandbox, symbol)) for symbol in SYMBOLS]
        tasks.append(loop.create_task(drive_countdowns(sandbox)))
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close_websockets(app: web.Application) -> None:
        for conn in list(sandbox.hub.connections):
            await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"sandbox shutting down")

    app.cleanup_ctx.append(background)
    app.on_shutdown.append(close_websockets)
    return app


async def watch_parent(pid: int, stop: asyncio.Event) -> None:
    """Stop when `pid` is gone: a test session killed with SIGKILL cannot stop its sandbox itself."""
    while not stop.is_set():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            logger.info("parent process %d is gone", pid)
            stop.set()
            return
        except PermissionError:
            pass  # it exists, under another user
        await asyncio.sleep(PARENT_CHECK_S)


async def serve(
    sandbox: Sandbox,
    host: str,
    port: int,
    on_ready: Callable[[str], None] | None = None,
    parent_pid: int | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM (or `parent_pid` exits), then close websockets and stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watchdog = loop.create_task(watch_parent(parent_pid, stop)) if parent_pid else None
    runner = web.AppRunner(
        build_app(sandbox), access_log_class=PathOnlyAccessLogger, handle_signals=False, shutdown_timeout=2.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        if on_ready is not None:
            on_ready(url)
        await stop.wait()
        logger.info("sandbox exchange stopping")
    finally:
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        await runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
