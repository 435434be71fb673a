"""The running sandbox: state, market feed, engine and websocket hub, wired together."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from apps.sandbox.engine import Engine
from apps.sandbox.faults import Faults
from apps.sandbox.feed import Feed
from apps.sandbox.hub import Hub
from apps.sandbox.state import DEFAULT_RATE_LIMIT, ExchangeState, KeySpec


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Options:
    seed: int = 0
    # The price of each symbol moves after a random pause in this range.
    min_move_s: float = 0.25
    max_move_s: float = 1.0
    rate_limit: int = DEFAULT_RATE_LIMIT


class Sandbox:
    def __init__(self, startup_keys: list[KeySpec], options: Options, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.options = options
        self.clock = clock
        self.state = ExchangeState(startup_keys, options.rate_limit)
        now = clock()
        self.state.reset(now)
        self.feed = Feed(options.seed, now)
        self.hub = Hub(self.feed, clock)
        self.engine = Engine(self.state, self.feed, clock, self.hub)
        self.faults = Faults(options.seed)

    def now(self) -> int:
        return self.clock()

    def server_now(self) -> int:
        """The clock signed requests are checked against and serverTime reports: `now` plus the clock_offset fault."""
        return self.clock() + self.faults.clock_offset_ms

    def reset(self) -> None:
        """Back to how the process started: the command-line keys only, fresh balances and prices, no faults."""
        self.hub.terminate_user_streams()
        self.faults.reset()
        now = self.clock()
        self.state.reset(now)
        self.feed.reset(now)


SANDBOX = web.AppKey("sandbox", Sandbox)
