"""What every fault test shares: a fleet trading on the sandbox, the books check, the report line, server faults.

A fault test (tests/faults/test_<fault>.py, one file per fault) asks for the `fault_scenario` fixture
(tests/faults/conftest.py), breaks something for real while the fleet trades, and then checks the books:

    pytestmark = pytest.mark.django_db(transaction=True)

    def test_the_fleet_survives_x(fault_scenario: FaultScenario, services: Harness) -> None:
        scenario = fault_scenario.start()                 # trading: grids resting, fills coming
        with Outage("x") as outage, server_stopped(services, "valkey"):
            ...                                           # what must hold while it is down
        recovered = scenario.wait_ticking(after=outage.ended)   # every bot ticks again by itself
        books = scenario.settled()                        # exchange and database agree (or time out)
        fault_report("x", outage=outage, books=books, recovery_s=recovered - outage.ended_mono)
        books.assert_clean()

The pieces:

- `FaultScenario`: three live grid bots (each on its own sandbox key, so each key's orders are one bot's)
  and one paper grid bot, all on BTC/USDT, run by a real fleet supervisor (`FleetLoop` over the `Fleet`
  the fixture passes in) with real bot worker processes, while a `PriceSwing` moves the sandbox's price
  across the grids' levels every few seconds, so orders keep filling and being re-placed throughout
  (also while a server is down). `start()` returns once every bot trades.
- `Books` (`FaultScenario.books()` / `settled()`): the sandbox's own records against the database. For
  each live key: every order the exchange holds must have exactly one `Order` row (none: `orders_lost`;
  two: `duplicates`), every trade the exchange made must be one `Fill` row (`fills_lost`, `fills_extra`),
  and no grid level may rest twice on the exchange (a doubled order: `duplicates`). The paper bot's
  orders (only in the database) must each have exactly the fill their status says.
- `fault_report()`: the ONE line each fault test prints, also appended to var/faults/report.txt:
  `fault=<name> duration=<s> orders_placed=<n> duplicates=<n> fills_lost=<n> recovery_s=<s> orders_lost=<n>`.
- `Outage`: times a fault (wall clock, for comparing with exchange and database times; monotonic, for
  durations).
- `server_stopped(services, name)`: stop the session's embedded PostgreSQL, Valkey or OpenBao for real and
  always start it again on the same port with the same data (OpenBao unsealed), waiting until it answers.
  `vault_sealed(services)`: seal OpenBao and always unseal it again.
- `LiveSocket(client)`: the dashboard's live websocket of a logged-in client (the real ASGI application),
  recording every event it receives, for "the live feed misses nothing" checks.
- `audit_appends_held()`: hold the audit log's append lock on a connection of the test's own, so that every
  transaction that writes an audit entry waits, still open. A bot placing an order writes its audit entry
  after the exchange accepted the order, before its transaction commits: holding the lock catches workers
  exactly between the exchange's acceptance and the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.audit.services import AUDIT_LOCK_KEY
from apps.bots.fleet import Fleet
from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_create
from apps.trading.models import Fill, Order
from apps.vault import client as vault
from apps.vault import server as vault_server
from tests.fixtures.sandbox import SandboxProcess
from tests.fleet_support import FleetLoop, embedded, wait_until
from tests.harness import Harness
from tests.keys import Key
from tests.live.conftest import socket as live_socket

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
REPORT_FILE = ROOT / "var" / "faults" / "report.txt"
SYMBOL = "BTC/USDT"
LIVE_BOTS = 3
# A grid of 11 levels 200 apart around 60,000; the price swings between LOW and HIGH, so every swing fills
# the nearest buys (down) or sells (up) and the bots place new ones.
GRID = {"lower": "59000", "upper": "61000", "levels": 11, "order_amount": "0.001"}
MID, LOW, HIGH = Decimal("60000"), Decimal("59700"), Decimal("60300")
SWING_EVERY_S = 2.0
FIRST_FILL_WAIT_S = 60.0
START_TIMEOUT_S = 120.0
SETTLE_TIMEOUT_S = 45.0
_names = itertools.count(1)


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- the price ----------------------------------------------------------------------------------------


class PriceSwing:
    """Moves the sandbox's SYMBOL between LOW and HIGH every SWING_EVERY_S seconds, in a thread.

    `hold()` stops the swing where the price is (the books can then settle); `swing()` starts it again.
    Admin calls that fail (the sandbox frozen by a test) are retried at the next turn.
    """

    def __init__(self, sandbox: SandboxProcess) -> None:
        self.admin = sandbox.admin
        self._stop = threading.Event()
        self._swinging = threading.Event()
        self._thread = threading.Thread(target=self._run, name="price-swing", daemon=True)
        self.moves = 0

    def start(self) -> PriceSwing:
        self.admin.set_price(SYMBOL, MID, hold=True)
        self._swinging.set()
        self._thread.start()
        return self

    def _run(self) -> None:
        prices = itertools.cycle([LOW, HIGH])
        while not self._stop.wait(SWING_EVERY_S):
            if not self._swinging.is_set():
                continue
            try:
                self.admin.set_price(SYMBOL, next(prices), hold=True)
                self.moves += 1
            except Exception as exc:  # the sandbox frozen or busy: the next turn tries again
                logger.info("price swing: %s", exc)

    def hold(self) -> None:
        self._swinging.clear()

    def swing(self) -> None:
        self._swinging.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        with contextlib.suppress(Exception):
            self.admin.release_price(SYMBOL)


# -- the books ----------------------------------------------------------------------------------------


@dataclass
class Books:
    """The exchange's records against the database's, at one moment (see the module docstring)."""

    orders_placed: int = 0  # orders the exchange holds for the live keys, plus the paper bot's orders
    duplicates: int = 0
    orders_lost: int = 0
    fills_lost: int = 0
    fills_extra: int = 0
    fills: int = 0  # trades on the exchange for the live keys, plus the paper bot's fills
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.duplicates or self.orders_lost or self.fills_lost or self.fills_extra)

    def assert_clean(self) -> None:
        assert self.clean, f"the exchange and the database disagree: {self}"
        assert self.orders_placed > 0 and self.fills > 0, f"nothing was traded, nothing was tested: {self}"

    def note(self, what: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(what)


def _doubled_levels(open_orders: list[tuple[str, Decimal]], books: Books, who: str) -> None:
    """A grid rests at most one order per level and side: a second one is a doubled order."""
    for (side, price), n in Counter(open_orders).items():
        if n > 1:
            books.duplicates += n - 1
            books.note(f"{who}: {n} open {side} orders at {price}")


def _live_books(bot: Bot, key: Key, sandbox: SandboxProcess, books: Books) -> None:
    rows = list(
        Order.objects.filter(account_id=bot.account_id, paper=False).values("client_order_id", "exchange_order_id")
    )
    by_cid = Counter(r["client_order_id"] for r in rows)
    by_exchange_id = Counter(r["exchange_order_id"] for r in rows if r["exchange_order_id"])
    stored_fills = set(Fill.objects.filter(account_id=bot.account_id).values_list("trade_id", flat=True))
    remote = sandbox.admin.orders(key.api_key)
    trades = _trades(key, sandbox)
    books.orders_placed += len(remote)
    books.fills += len(trades)
    for order in remote:
        cid, oid = order["clientOrderId"], str(order["orderId"])
        n = max(by_cid[cid], by_exchange_id[oid])
        if n == 0:
            books.orders_lost += 1
            books.note(f"{bot.name}: exchange order {oid} ({cid}) has no row")
        elif n > 1:
            books.duplicates += n - 1
            books.note(f"{bot.name}: exchange order {oid} ({cid}) has {n} rows")
    open_levels = [
        (o["side"].lower(), Decimal(o["price"])) for o in remote if o["status"] in ("NEW", "PARTIALLY_FILLED")
    ]
    _doubled_levels(open_levels, books, bot.name)
    lost = trades - stored_fills
    extra = stored_fills - trades
    books.fills_lost += len(lost)
    books.fills_extra += len(extra)
    if lost or extra:
        books.note(f"{bot.name}: trades not stored {sorted(lost)[:5]}, fills not on the exchange {sorted(extra)[:5]}")


def _trades(key: Key, sandbox: SandboxProcess) -> set[str]:
    """The ids of every trade the exchange made for this key (its own API, paged)."""
    client = key.raw_ccxt(sandbox.url)
    seen: set[str] = set()
    since = None
    while True:
        page = client.fetch_my_trades(SYMBOL, since=since, limit=1000)
        new = {str(t["id"]) for t in page} - seen
        seen |= new
        if len(page) < 1000 or not new:
            return seen
        since = page[-1]["timestamp"]


def _paper_books(bot: Bot, books: Books) -> None:
    orders = list(Order.objects.filter(bot=bot, paper=True).prefetch_related("fills"))
    books.orders_placed += len(orders)
    for order in orders:
        fills = list(order.fills.all())
        books.fills += len(fills)
        expected = 1 if order.status == Order.Status.FILLED else 0
        if len(fills) < expected:
            books.fills_lost += expected - len(fills)
            books.note(f"{bot.name}: paper order {order.pk} filled without its fill")
        elif len(fills) > expected:
            books.fills_extra += len(fills) - expected
            books.note(f"{bot.name}: paper order {order.pk} ({order.status}) has {len(fills)} fills")
    _doubled_levels(
        [(o.side, o.price) for o in orders if o.is_open and o.price is not None], books, f"{bot.name} (paper)"
    )


# -- the scenario -------------------------------------------------------------------------------------


@dataclass
class FaultScenario:
    """Three live grid bots and one paper grid bot trading under a real fleet supervisor (module docstring)."""

    sandbox: SandboxProcess
    fleet: Fleet
    new_key: Callable[..., Key]
    live: list[tuple[Bot, Key]] = field(default_factory=list)
    paper: Bot | None = None
    loop: FleetLoop | None = None
    swing: PriceSwing | None = None
    started_ms: int = 0

    @property
    def bots(self) -> list[Bot]:
        return [bot for bot, _ in self.live] + ([self.paper] if self.paper is not None else [])

    def add_bot(self, *, mode: str = Bot.Mode.LIVE, desired: str = Bot.Desired.RUNNING) -> tuple[Bot, Key]:
        """A grid bot on a fresh sandbox account of its own (live: its key is checked and stored in Vault)."""
        key = self.new_key()
        acct, _ = exchange_account_create(
            label=f"faults-{key.api_key[-8:]}",
            exchange_id="sandbox",
            credentials=key.form(),
            attested_no_withdrawals=False,
            actor="system:test",
        )
        return _grid_bot(acct, mode=mode, desired=desired), key

    def start(self, timeout: float = START_TIMEOUT_S) -> FaultScenario:
        """Start the supervisor and the price swing, create the bots; return once every bot trades (each live
        grid rests orders on the exchange, the paper grid in the database)."""
        self.started_ms = _now_ms()
        self.swing = PriceSwing(self.sandbox).start()
        # First: in fork mode its template preloads meanwhile; it starts each bot as it appears.
        self.loop = FleetLoop(self.fleet).start()
        self.live = [self.add_bot() for _ in range(LIVE_BOTS)]
        self.paper = self.add_bot(mode=Bot.Mode.PAPER)[0]
        ids = [b.pk for b in self.bots]
        wait_until(
            lambda: Bot.objects.filter(pk__in=ids, observed_state=Bot.Observed.RUNNING).count() == len(ids),
            "every bot's worker to run",
            timeout=timeout,
        )
        wait_until(
            lambda: (
                all(self.sandbox.admin.open_orders(key.api_key) for _, key in self.live)
                and Order.objects.filter(bot=self.paper).exists()
            ),
            "every grid resting orders",
            timeout=timeout,
        )
        return self

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.stop()
        if self.swing is not None:
            self.swing.stop()

    def heartbeats(self) -> dict[int, dt.datetime | None]:
        return dict(Bot.objects.filter(pk__in=[b.pk for b in self.bots]).values_list("pk", "last_heartbeat"))

    def wait_ticking(self, *, after: dt.datetime, timeout: float = 90.0) -> float:
        """Wait until every bot has ticked after `after` (by itself: nobody restarts anything); returns when
        (time.monotonic()). Database errors while it is coming back count as "not yet"."""

        def ticked() -> bool:
            try:
                beats = self.heartbeats()
            except Exception:
                connection.close()
                return False
            return all(beat is not None and beat > after for beat in beats.values())

        wait_until(ticked, f"every bot to tick again after {after:%H:%M:%S}", timeout=timeout, every=0.25)
        return time.monotonic()

    def exchange_orders(self, *, since_ms: int, until_ms: int | None = None) -> list[dict[str, Any]]:
        """The live keys' orders the exchange received between the two times (its own clock, ms), each with
        the key it came with as "apiKey"."""
        found = []
        for _, key in self.live:
            for order in self.sandbox.admin.orders(key.api_key):
                if since_ms <= int(order["time"]) and (until_ms is None or int(order["time"]) <= until_ms):
                    found.append({**order, "apiKey": key.api_key})
        return found

    def books(self) -> Books:
        books = Books()
        for bot, key in self.live:
            _live_books(bot, key, self.sandbox, books)
        if self.paper is not None:
            _paper_books(self.paper, books)
        return books

    def _traded(self) -> bool:
        try:
            connection.close()
            return self.books().fills > 0
        except Exception:  # a server still coming back: not yet
            return False

    def settled(self, timeout: float = SETTLE_TIMEOUT_S) -> Books:
        """Hold the price, then wait until the books agree (every bot catches up on its next ticks); returns
        the last check either way, for the test to assert on and report."""
        if self.swing is not None:
            # Something must have traded before the books can prove nothing was lost: on a loaded machine the
            # swing may need longer than the fault to fill a first order.
            until = time.monotonic() + FIRST_FILL_WAIT_S
            while time.monotonic() < until and not self._traded():
                time.sleep(1.0)
            self.swing.hold()
        last = Books()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            connection.close()  # a fresh look, whatever this thread's connection went through
            last = self.books()
            if last.clean:
                # Once more after a tick or two: a fill the exchange made just before the hold may be in flight.
                time.sleep(2.0)
                last = self.books()
                if last.clean:
                    return last
            time.sleep(1.0)
        return last


def _grid_bot(acct: ExchangeAccount, *, mode: str, desired: str) -> Bot:
    return Bot.objects.create(
        name=f"faults-grid-{mode}-{next(_names)}",
        account=acct,
        strategy="grid",
        params=dict(GRID),
        symbols=[SYMBOL],
        mode=mode,
        tick_interval_s=1,
        max_order_notional=Decimal("100"),
        max_position_notional=Decimal("5000"),
        max_open_orders=50,
        max_orders_per_minute=300,
        daily_loss_limit=Decimal("100000"),
        max_drawdown_pct=Decimal("90"),
        desired_state=desired,
    )


# -- timing and the report ------------------------------------------------------------------------------


class Outage:
    """Times a fault: `began`/`ended` (wall clock, aware), `began_ms`/`ended_ms` (ms, like the exchange's
    order times) and `duration_s` (monotonic)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.began = self.ended = timezone.now()
        self.began_ms = self.ended_ms = 0
        self._began_mono = self.ended_mono = 0.0

    def __enter__(self) -> Outage:
        self.began, self.began_ms, self._began_mono = timezone.now(), _now_ms(), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ended, self.ended_ms, self.ended_mono = timezone.now(), _now_ms(), time.monotonic()

    @property
    def duration_s(self) -> float:
        return self.ended_mono - self._began_mono

    def elapsed_s(self) -> float:
        """Seconds since the fault began (inside the block)."""
        return time.monotonic() - self._began_mono


def fault_report(name: str, *, duration_s: float, books: Books, recovery_s: float) -> str:
    """Print the test's one line and append it to var/faults/report.txt (the README's table is built from it)."""
    line = (
        f"fault={name} duration={duration_s:.1f} orders_placed={books.orders_placed} duplicates={books.duplicates} "
        f"fills_lost={books.fills_lost} recovery_s={recovery_s:.1f} orders_lost={books.orders_lost}"
    )
    print(line)
    REPORT_FILE.parent.mkdir(parents=True, exist_ok=True)
    with REPORT_FILE.open("a") as out:
        out.write(line + "\n")
    return line


# -- breaking the servers ---------------------------------------------------------------------------------


def _answers(name: str, services: Harness) -> bool:
    try:
        if name == "postgres":
            with psycopg.connect(**_dsn(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        if name == "openbao":
            return vault.health(services.vault_addr) == "active"
    except (psycopg.Error, vault.VaultError):
        return False
    raise ValueError(name)


@contextlib.contextmanager
def server_stopped(services: Harness, name: str) -> Iterator[None]:
    """Stop the session's embedded `name` ("postgres", "valkey" or "openbao"); always start it again on the
    same port with the same data, and wait until it answers (OpenBao: unsealed and active)."""
    if name == "valkey":  # the one tests/fleet_support.py has had from the start
        from tests.fleet_support import valkey_stopped

        with valkey_stopped(services):
            yield
        return
    servers = embedded(services, name)
    servers.stop_one(name)
    try:
        assert not _answers(name, services), f"{name} still answers after it was stopped"
        yield
    finally:
        servers.start_one(name)
        wait_until(lambda: _answers(name, services), f"{name} to answer again", timeout=60)
        if name == "postgres":
            connection.close()  # this thread's connection died with the server


@contextlib.contextmanager
def vault_sealed(services: Harness) -> Iterator[None]:
    """Seal OpenBao (the root token can); always unseal it with the session's key and wait until it is active."""
    vault_server.seal(services.vault_addr, services.admin_token)
    try:
        assert vault.health(services.vault_addr) == "sealed"
        yield
    finally:
        vault_server.unseal(services.vault_addr, services.unseal_key)
        wait_until(lambda: _answers("openbao", services), "OpenBao to be active again", timeout=60)


def _dsn() -> dict[str, Any]:
    db = connection.settings_dict
    return {
        "host": db["HOST"],
        "port": db["PORT"],
        "user": db["USER"],
        "password": db["PASSWORD"],
        "dbname": db["NAME"],
    }


@contextlib.contextmanager
def audit_appends_held() -> Iterator[Callable[[], int]]:
    """Hold the audit append lock on a connection of our own (module docstring); the block gets a function
    counting the database sessions waiting for it. Released at the end (or when the server goes away)."""
    conn = psycopg.connect(**_dsn(), autocommit=False)
    try:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_LOCK_KEY])

        def waiting() -> int:
            with psycopg.connect(**_dsn(), autocommit=True) as probe:
                row = probe.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND ((classid::bigint << 32) | objid::bigint) = %s",
                    [AUDIT_LOCK_KEY],
                ).fetchone()
            return int(row[0]) if row else 0

        yield waiting
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.rollback()
        with contextlib.suppress(psycopg.Error):
            conn.close()


# -- the live feed ------------------------------------------------------------------------------------------


class LiveSocket:
    """The dashboard's websocket (/ws/live/) of a logged-in client, through the real ASGI application (its hub
    reading the events table, woken by Valkey), on an event loop of its own in a thread. `seqs` is every
    event's sequence number it received, in the order received."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seqs: list[int] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="live-socket", daemon=True)
        self._ws: WebsocketCommunicator | None = None
        self._reader: asyncio.Future[None] | None = None

    def __enter__(self) -> LiveSocket:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self.loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)

    async def _open(self) -> None:
        self._ws = live_socket(self.client)  # as a browser tab opens it: its session cookie, our Origin
        connected, code = await self._ws.connect(timeout=20)
        assert connected, f"the live socket was refused ({code})"
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        while True:
            try:
                body = await self._ws.receive_json_from(timeout=3600)
            except TimeoutError:
                continue
            self.seqs.extend(int(event["seq"]) for event in body["events"])

    async def _close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.disconnect()

    def wait_for(self, seq: int, timeout: float = 30.0) -> None:
        wait_until(lambda: self.seqs and max(self.seqs) >= seq, f"the live socket to receive event {seq}", timeout)
