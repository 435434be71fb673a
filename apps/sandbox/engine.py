"""The matching engine: orders against the synthetic book, balances, fees and the countdown.

An incoming order that crosses the book takes the synthetic levels (taker fee); what is left of
a GTC limit order rests and is filled (maker fee, at its own price) by later price moves that
cross it, at most the symbol's `level_qty` per move, which is how large orders fill partially.
Orders of different accounts are not matched against each other: every account trades with
the synthetic market only.

Fees follow Binance without BNB: the buyer pays commission in the base asset it receives,
the seller in the quote asset it receives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Protocol

from apps.sandbox import errors
from apps.sandbox.decimals import ZERO, floor_to, up8
from apps.sandbox.feed import Feed, Level, PublicTrade
from apps.sandbox.orders import OrderRequest, generated_client_order_id
from apps.sandbox.state import Account, Countdown, ExchangeState, Fill, Order, Side, Status, Trade
from apps.sandbox.symbols import MAKER_RATE, SYMBOLS, TAKER_RATE


class EventSink(Protocol):
    """Where the engine reports what happened (the websocket hub, in the server)."""

    def order_changed(self, order: Order, execution: str, fill: Fill | None, cancel_client_id: str | None) -> None: ...

    def balances_changed(self, account: Account, assets: Iterable[str]) -> None: ...

    def public_trade(self, symbol: str, trade: PublicTrade) -> None: ...

    def market_moved(self, symbol: str) -> None: ...


class NullSink:
    def order_changed(self, order: Order, execution: str, fill: Fill | None, cancel_client_id: str | None) -> None:
        pass

    def balances_changed(self, account: Account, assets: Iterable[str]) -> None:
        pass

    def public_trade(self, symbol: str, trade: PublicTrade) -> None:
        pass

    def market_moved(self, symbol: str) -> None:
        pass


class Engine:
    def __init__(
        self, state: ExchangeState, feed: Feed, clock: Callable[[], int], sink: EventSink | None = None
    ) -> None:
        self.state = state
        self.feed = feed
        self.clock = clock
        self.sink: EventSink = sink or NullSink()

    # -- new orders -----------------------------------------------------------------------

    def place(self, account: Account, req: OrderRequest) -> Order:
        spec = req.spec
        if account.order_by_client_id(req.client_order_id) is not None:
            # Stricter than Binance (which only refuses an id shared with an OPEN order), so a
            # retried request can never place a second order, whatever became of the first.
            raise errors.duplicate_order()
        bids, asks = self.feed.market(spec.symbol).levels()
        plan = self._plan(req, asks if req.side is Side.BUY else bids)
        planned_qty = sum((q for _, q in plan), ZERO)
        if req.type == "LIMIT_MAKER" and plan:
            raise errors.would_take()
        fill_or_kill_fails = req.time_in_force == "FOK" and planned_qty < (req.quantity or ZERO)
        if fill_or_kill_fails:
            plan = []

        if req.type == "MARKET":
            orig_qty = req.quantity if req.quantity is not None else planned_qty
            lock = sum((p * q for p, q in plan), ZERO) if req.side is Side.BUY else planned_qty
        else:
            assert req.quantity is not None and req.price is not None  # parse_new_order guarantees both
            orig_qty = req.quantity
            lock = req.price * req.quantity if req.side is Side.BUY else req.quantity
        lock_asset = spec.quote if req.side is Side.BUY else spec.base
        funds = account.balance(lock_asset)
        if funds.free < lock:
            raise errors.insufficient_balance()

        now = self.clock()
        order = Order(
            order_id=self.state.take_order_id(),
            api_key=account.api_key,
            symbol=spec.symbol,
            client_order_id=req.client_order_id,
            side=req.side,
            type=req.type,
            time_in_force=req.time_in_force,
            price=req.price or ZERO,
            orig_qty=orig_qty,
            orig_quote_qty=req.quote_qty or ZERO,
            time=now,
            update_time=now,
            locked=lock,
        )
        funds.free -= lock
        funds.locked += lock
        account.orders[order.order_id] = order
        account.order_ids_by_client_id[order.client_order_id] = order.order_id
        self.state.orders_accepted[account.api_key] += 1
        self.sink.order_changed(order, "NEW", None, None)
        self.sink.balances_changed(account, [lock_asset])

        for price, qty in plan:
            self._fill(account, order, price, qty, maker=False)
        if order.status.is_open:
            if order.type == "MARKET" or order.time_in_force in ("IOC", "FOK") or order.remaining <= 0:
                self._finish(account, order, Status.EXPIRED, None)
            else:
                self.state.rest(order)
        return order

    def _plan(self, req: OrderRequest, levels: list[Level]) -> list[Level]:
        """The (price, qty) the order would take from the synthetic book right now."""
        spec = req.spec
        plan: list[Level] = []
        remaining = req.quantity
        remaining_quote = req.quote_qty
        for price, available in levels:
            if req.type != "MARKET":
                assert req.price is not None
                if (req.side is Side.BUY and price > req.price) or (req.side is Side.SELL and price < req.price):
                    break
            if remaining_quote is not None:
                qty = min(available, floor_to(remaining_quote / price, spec.step_size))
                if qty < spec.min_qty:
                    break
                remaining_quote -= qty * price
            else:
                assert remaining is not None
                qty = min(available, remaining)
                remaining -= qty
            plan.append((price, qty))
            if remaining is not None and remaining <= 0:
                break
        return plan

    # -- fills, cancels, expiry -----------------------------------------------------------

    def _fill(self, account: Account, order: Order, price: Decimal, qty: Decimal, maker: bool) -> None:
        spec = SYMBOLS[order.symbol]
        market = self.feed.market(order.symbol)
        base, quote = account.balance(spec.base), account.balance(spec.quote)
        rate = MAKER_RATE if maker else TAKER_RATE
        quote_amount = price * qty
        if order.side is Side.BUY:
            # A limit buy locked its own price; filling better than that refunds the difference.
            release = order.price * qty if order.type != "MARKET" else quote_amount
            quote.locked -= release
            quote.free += release - quote_amount
            order.locked -= release
            commission, commission_asset = up8(qty * rate), spec.base
            base.free += qty - commission
        else:
            base.locked -= qty
            order.locked -= qty
            commission, commission_asset = up8(quote_amount * rate), spec.quote
            quote.free += quote_amount - commission
        now = self.clock()
        buyer_is_maker = (order.side is Side.BUY) == maker
        public = market.record_trade(price, qty, buyer_is_maker, now)
        fill = Fill(public.trade_id, price, qty, commission, commission_asset, now, maker)
        order.fills.append(fill)
        order.executed_qty += qty
        order.cumm_quote_qty += quote_amount
        order.update_time = now
        order.status = Status.FILLED if order.remaining <= 0 else Status.PARTIALLY_FILLED
        account.trades.append(
            Trade(
                trade_id=fill.trade_id,
                order_id=order.order_id,
                symbol=order.symbol,
                price=price,
                qty=qty,
                quote_qty=quote_amount,
                commission=commission,
                commission_asset=commission_asset,
                time=now,
                is_buyer=order.side is Side.BUY,
                is_maker=maker,
            )
        )
        if order.status is Status.FILLED:
            self.state.unrest(order)
            self._release(account, order)
        self.sink.public_trade(order.symbol, public)
        self.sink.order_changed(order, "TRADE", fill, None)
        self.sink.balances_changed(account, [spec.base, spec.quote])

    def _release(self, account: Account, order: Order) -> str:
        """Give back what the order still holds locked; returns the asset."""
        spec = SYMBOLS[order.symbol]
        asset = spec.quote if order.side is Side.BUY else spec.base
        funds = account.balance(asset)
        funds.locked -= order.locked
        funds.free += order.locked
        order.locked = ZERO
        return asset

    def _finish(self, account: Account, order: Order, status: Status, cancel_client_id: str | None) -> None:
        order.status = status
        order.update_time = self.clock()
        self.state.unrest(order)
        asset = self._release(account, order)
        self.sink.order_changed(order, status.value, None, cancel_client_id)
        self.sink.balances_changed(account, [asset])

    def find(self, account: Account, symbol: str, order_id: int | None, client_order_id: str | None) -> Order | None:
        order = account.orders.get(order_id) if order_id is not None else None
        if order is None and order_id is None and client_order_id is not None:
            order = account.order_by_client_id(client_order_id)
        if order is None or order.symbol != symbol:
            return None
        return order

    def cancel(
        self,
        account: Account,
        symbol: str,
        order_id: int | None,
        client_order_id: str | None,
        new_client_id: str | None,
    ) -> tuple[Order, str]:
        order = self.find(account, symbol, order_id, client_order_id)
        if order is None or not order.status.is_open:
            raise errors.unknown_order()
        cancel_id = new_client_id or generated_client_order_id()
        self._finish(account, order, Status.CANCELED, cancel_id)
        return order, cancel_id

    def cancel_all(self, account: Account, symbol: str | None) -> list[tuple[Order, str]]:
        canceled = []
        for order in sorted(self.state.open_orders_of(account.api_key, symbol), key=lambda o: o.order_id):
            cancel_id = generated_client_order_id()
            self._finish(account, order, Status.CANCELED, cancel_id)
            canceled.append((order, cancel_id))
        return canceled

    # -- price moves ----------------------------------------------------------------------

    def match_resting(self, symbol: str) -> int:
        """Fill the resting orders the current price crosses; returns how many fills were made."""
        spec = SYMBOLS[symbol]
        bid, ask = self.feed.market(symbol).best()
        fills = 0
        for order in self.state.resting(symbol):
            crossed = ask <= order.price if order.side is Side.BUY else bid >= order.price
            account = self.state.accounts.get(order.api_key)
            if not crossed or account is None:
                continue
            self._fill(account, order, order.price, min(order.remaining, spec.level_qty), maker=True)
            fills += 1
        return fills

    # -- dead-man's switch ----------------------------------------------------------------

    def set_countdown(self, account: Account, symbol: str | None, countdown_ms: int) -> None:
        key = (account.api_key, symbol)
        if countdown_ms == 0:
            existing = self.state.countdowns.get(key)
            if existing is not None:
                existing.active = False
            return
        previous = self.state.countdowns.get(key)
        countdown = Countdown(account.api_key, symbol, countdown_ms, self.clock() + countdown_ms)
        if previous is not None:
            countdown.triggered = previous.triggered
            countdown.last_triggered_ms = previous.last_triggered_ms
        self.state.countdowns[key] = countdown

    def run_countdowns(self) -> int:
        """Cancel the open orders of every countdown that ran out; returns how many orders."""
        now = self.clock()
        canceled = 0
        for countdown in list(self.state.countdowns.values()):
            if not countdown.active or now < countdown.deadline_ms:
                continue
            # Like Binance futures: once fired, the countdown is off until set again.
            countdown.active = False
            countdown.triggered += 1
            countdown.last_triggered_ms = now
            account = self.state.accounts.get(countdown.api_key)
            if account is not None:
                canceled += len(self.cancel_all(account, countdown.symbol))
        return canceled
