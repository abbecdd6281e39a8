"""The paper broker: fills orders against the latest bars, its account kept in the records.

Nothing lives in memory: orders, their events and fills are rows of the records (`broker =
"paper"`), the account is its starting cash (kept in the records' config) plus what its fills add
up to, so a new broker object on the same records is the same account after a restart.

How an order fills, in market time (bars, not the wall clock):

- against the bar it was submitted on (the latest bar of its symbol) unless `latency_bars` holds
  it back that many bars, then on every following bar until done (`advance`);
- at most `participation` of a bar's volume per fill, the rest on later bars (partial fills);
  a bar without volume fills nothing;
- a market order at the bar's close moved `slippage_bps` against it; a limit order only when the
  bar traded through its limit, never at a worse price than the limit;
- a fee of `fee_bps` of the notional;
- time in force: `ioc` cancels what the first bar did not fill, `fok` fills all on the first bar or
  nothing, `day` expires on the first bar of a later UTC day, `gtc` works until filled or canceled.

Every step is idempotent: one fill per (order, bar), its execution id `CLIENT_ORDER_ID:BAR_EPOCH`,
and every order event keyed, so a retried call after a crash finishes the step instead of
repeating it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any

from tradeos_lab.brokers.base import (
    BrokerAccount,
    BrokerFill,
    BrokerOrder,
    OrderReport,
    OrderRequest,
)
from tradeos_lab.contracts import Bar, Liquidity, OrderStatus, OrderType, Side, TimeInForce
from tradeos_lab.errors import ValidationError
from tradeos_lab.stores.records import Fill, Order, PlacedOrder, RecordsStore
from tradeos_lab.symbols import Timeframe
from tradeos_lab.tiers.cache import Cache

LatestBar = Callable[[str], Bar | None]
"""The latest bar of a symbol, or None when there is none yet."""

_TIMES_IN_FORCE = (TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK)
_ORDER_TYPES = (OrderType.MARKET, OrderType.LIMIT)
_ACCEPTED = OrderStatus.ACCEPTED.value
_FILLED = OrderStatus.FILLED.value
_PARTIALLY_FILLED = OrderStatus.PARTIALLY_FILLED.value


@dataclass(frozen=True)
class PaperConfig:
    """How the paper broker fills: costs, liquidity, delay and the account's starting cash."""

    slippage_bps: float = 5.0
    participation: float = 1.0
    """Largest share of one bar's volume a single order may take (0 < p <= 1)."""
    fee_bps: float = 10.0
    latency_bars: int = 0
    """Bars an order waits before it reaches the market; 0 fills on the bar it was sent on."""
    starting_cash: float = 100_000.0
    currency: str = "USD"

    def __post_init__(self) -> None:
        for name in ("slippage_bps", "fee_bps", "starting_cash"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValidationError(f"paper broker {name} must be a finite number >= 0")
        if not 0 < self.participation <= 1:
            raise ValidationError("paper broker participation must be in (0, 1]")
        if self.latency_bars < 0:
            raise ValidationError("paper broker latency_bars must be >= 0")

    @classmethod
    def from_records(cls, records: RecordsStore, name: str = "paper") -> PaperConfig:
        """The defaults, overridden by the records' live-tunable config `broker.NAME.FIELD`
        (set with `records.set_config`, which keeps who changed it and why)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            kept = records.get_config(f"broker.{name}.{f.name}")
            if kept is not None:
                values[f.name] = kept
        try:
            return cls(**values)
        except TypeError as e:
            raise ValidationError(f"paper broker config in the records is invalid: {e}") from None


def cached_bar(cache: Cache, timeframe: Timeframe | str) -> LatestBar:
    """The latest bar of a symbol as the cache holds it (what Ingestion wrote last)."""
    tf = Timeframe.parse(timeframe)

    def latest(symbol: str) -> Bar | None:
        frame = cache.get_bars(symbol, tf, limit=1)
        if frame.empty:
            return None
        row = frame.iloc[-1]
        return Bar(
            symbol=symbol,
            timeframe=tf,
            ts=row["ts"].to_pydatetime(),
            open=float(row["open"]),
            high=float(row["high"]),
            low=float(row["low"]),
            close=float(row["close"]),
            volume=float(row["volume"]),
            source="cache",
        )

    return latest


@dataclass(frozen=True)
class ModelFill:
    """What the paper fill model gives an order on one bar (quantity 0: nothing)."""

    quantity: float
    price: float
    fee: float


def fill_model(
    config: PaperConfig,
    bar: Bar,
    *,
    side: Side | str,
    quantity: float,
    filled: float = 0.0,
    order_type: OrderType | str = OrderType.MARKET,
    limit_price: float | None = None,
    time_in_force: TimeInForce | str = TimeInForce.GTC,
) -> ModelFill:
    """The paper broker's fill of an order of `quantity` (`filled` of it done before) on `bar`.

    The one home of the paper fill rule, so the broker's fills and TCA's shadow of a venue's
    fill are the same model: at most `participation` of the bar's volume; a market order at the
    close moved `slippage_bps` against it; a limit order only when the bar traded through its
    limit and never at a worse price; a fill or kill order all at once or nothing; a fee of
    `fee_bps` of the notional.
    """
    remaining = quantity - filled
    fill = min(remaining, bar.volume * config.participation)
    nothing = ModelFill(0.0, 0.0, 0.0)
    if fill <= 0:
        return nothing
    if TimeInForce(time_in_force) is TimeInForce.FOK and fill < remaining:
        return nothing  # fill or kill: all on the first bar or nothing
    buy = Side(side) is Side.BUY
    slip = config.slippage_bps / 10_000
    price = bar.close * (1 + slip if buy else 1 - slip)
    if OrderType(order_type) is OrderType.LIMIT:
        if limit_price is None:
            raise ValidationError("a limit order needs a limit price")
        if (buy and bar.low > limit_price) or (not buy and bar.high < limit_price):
            return nothing
        price = min(price, limit_price) if buy else max(price, limit_price)
    return ModelFill(fill, price, fill * price * config.fee_bps / 10_000)


def order_fill(config: PaperConfig, order: Order, bar: Bar, filled: float) -> ModelFill:
    """`fill_model` of an order row of the records with `filled` of it already filled."""
    return fill_model(
        config,
        bar,
        side=order.side,
        quantity=order.quantity,
        filled=filled,
        order_type=order.order_type,
        limit_price=order.limit_price,
        time_in_force=order.time_in_force,
    )


class PaperBroker:
    """A simulated broker whose orders, fills and account are rows of the records."""

    def __init__(
        self,
        records: RecordsStore,
        latest_bar: LatestBar,
        *,
        config: PaperConfig | None = None,
        clock: Callable[[], float] = time.time,
        name: str = "paper",
    ) -> None:
        self.records = records
        self.latest_bar = latest_bar
        self.config = config or PaperConfig()
        self.clock = clock
        self.name = name
        self._starting_cash_key = f"broker.{name}.starting_cash"
        #: Per symbol, how many open orders the last `advance` found (a hint, not state).
        self.working_seen: dict[str, int] = {}
        self._starting_cash: float | None = None

    @classmethod
    def of_stack(
        cls,
        records: RecordsStore,
        cache: Cache,
        timeframe: Timeframe | str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> PaperBroker:
        """The paper account a running stack trades on: its settings from the records' config,
        its fills against the cache's latest bars of `timeframe`."""
        return cls(
            records,
            cached_bar(cache, timeframe),
            config=PaperConfig.from_records(records),
            clock=clock,
        )

    @contextmanager
    def same_bars(self) -> Iterator[None]:
        """Inside the block each symbol's latest bar is read once: a batch of orders placed
        together fills against the bar the first of them found, without a read per order."""
        read = self.latest_bar
        held: dict[str, Bar | None] = {}

        def latest(symbol: str) -> Bar | None:
            if symbol not in held:
                held[symbol] = read(symbol)
            return held[symbol]

        self.latest_bar = latest
        try:
            yield
        finally:
            self.latest_bar = read

    # ---- orders -----------------------------------------------------------------------------

    def submit(self, request: OrderRequest) -> OrderReport:
        """Place `request` and fill it against its symbol's latest bar; once per client order id."""
        cid = request.client_order_id
        fresh = self.records.record_order(
            client_order_id=cid,
            symbol=request.symbol,
            side=Side(request.side).value,
            quantity=request.quantity,
            order_type=OrderType(request.order_type).value,
            limit_price=request.limit_price,
            stop_price=request.stop_price,
            time_in_force=TimeInForce(request.time_in_force).value,
            strategy=request.strategy,
            broker=self.name,
            intent_id=request.intent_id,
            correlation_id=request.correlation_id,
            at=self._now(),
        )
        order = self.records.order(cid)
        if order.broker != self.name:
            raise ValidationError(
                f"order {cid} belongs to broker {order.broker!r}, not {self.name}"
            )
        # A fresh order was never placed; a known one may have been (read its events).
        submitted_on = None if fresh else self._submitted_on(cid)
        if submitted_on is not None or order.status == OrderStatus.REJECTED.value:
            # Already placed: answer as the first time (the fills of its first bar), place nothing.
            first = [] if submitted_on is None else self._fills_on(order, submitted_on)
            return OrderReport(broker_order(order), tuple(first))
        problem = _unsupported(request)
        bar = self.latest_bar(order.symbol)
        if (
            problem is None
            and bar is None
            and request.time_in_force
            in (
                TimeInForce.IOC,
                TimeInForce.FOK,
            )
        ):
            problem = f"no bar of {order.symbol} to fill a {request.time_in_force.value} order"
        if problem is not None:
            self._update(
                order, event=f"{cid}:rejected", status=OrderStatus.REJECTED, reason=problem
            )
            return OrderReport(broker_order(self.records.order(cid)))
        epoch = 0 if bar is None else _epoch(bar.ts)
        self._update(order, event=f"{cid}:{_ACCEPTED}:{epoch}", status=OrderStatus.ACCEPTED)
        fills: list[BrokerFill] = []
        if bar is not None and self.config.latency_bars == 0:
            fills = self._fill_on_bar(order, bar, [] if fresh else None)
        order = self.records.order(cid)
        if order.time_in_force in (TimeInForce.IOC.value, TimeInForce.FOK.value):
            order = self._finish(order, OrderStatus.CANCELED, "unfilled rest of an immediate order")
        return OrderReport(broker_order(order), tuple(fills))

    def submit_many(
        self, requests: Sequence[OrderRequest], *, known: set[str] | None = None
    ) -> list[OrderReport]:
        """`submit` for each request, in one records transaction. Orders the records do not hold
        yet that go to the market at once on their symbol's latest bar (market and limit orders,
        `latency_bars` 0, not ioc/fok) are placed together: their orders, events, fills and
        ledger entries are written with one statement per table; any other request (a repeat, a
        delayed or immediate order, a symbol without a bar) goes through `submit`.

        `known`: which of the requests' client order ids the records hold, when the caller read
        it in the same records batch (else read here)."""
        with self.records.batch(), self.same_bars():
            if known is None:
                known = self.records.known_orders(r.client_order_id for r in requests)
            plans: dict[int, PlacedOrder] = {}
            taken: set[str] = set(known)
            for index, request in enumerate(requests):
                if request.client_order_id in taken:
                    continue  # recorded already, or placed earlier in this batch: a repeat
                plan = self._plan(request)
                if plan is not None:
                    plans[index] = plan
                    taken.add(request.client_order_id)
            placed = self.records.record_placed(list(plans.values()), known=known)
            made = dict(zip(plans, placed, strict=True))
            reports: list[OrderReport] = []
            for index, request in enumerate(requests):
                if index not in made:
                    reports.append(self.submit(request))
                    continue
                row = made[index]
                fills = tuple(self._fill_of(row["order_type"], **f) for f in plans[index].fills)
                reports.append(OrderReport(order_of_row(row), fills))
        return reports

    def _plan(self, request: OrderRequest) -> PlacedOrder | None:
        """How a new order placed now goes, as `submit` would write it; None when it is not one
        `submit_many` places in bulk (see there). The request's enums are read once here."""
        order_type = OrderType(request.order_type)
        tif = TimeInForce(request.time_in_force)
        if (
            order_type not in _ORDER_TYPES  # unsupported: `submit` rejects it
            or tif not in _TIMES_IN_FORCE
            or self.config.latency_bars
            or tif in (TimeInForce.IOC, TimeInForce.FOK)
        ):
            return None
        bar = self.latest_bar(request.symbol)
        if bar is None:
            return None
        cid = request.client_order_id
        now = self._now()
        side = Side(request.side)
        values: dict[str, Any] = {
            "client_order_id": cid,
            "symbol": request.symbol,
            "side": side.value,
            "quantity": request.quantity,
            "order_type": order_type.value,
            "limit_price": request.limit_price,
            "stop_price": request.stop_price,
            "time_in_force": tif.value,
            "strategy": request.strategy,
            "broker": self.name,
            "intent_id": request.intent_id,
            "correlation_id": request.correlation_id,
            "at": now,
        }
        broker_id = _broker_order_id(cid)
        epoch = _epoch(bar.ts)
        updates: list[dict[str, Any]] = [
            {
                "event_id": f"{cid}:{_ACCEPTED}:{epoch}",
                "status": _ACCEPTED,
                "broker_at": now,
                "broker_order_id": broker_id,
                "sequence": 0,
            }
        ]
        fills: list[dict[str, Any]] = []
        model = fill_model(
            self.config,
            bar,
            side=side,
            quantity=request.quantity,
            order_type=order_type,
            limit_price=request.limit_price,
            time_in_force=tif,
        )
        quantity, price = model.quantity, model.price
        if quantity > 0:
            execution_id = f"{cid}:{epoch}"
            fills.append(
                {
                    "execution_id": execution_id,
                    "client_order_id": cid,
                    "symbol": request.symbol,
                    "side": side.value,
                    "quantity": quantity,
                    "price": price,
                    "fee": model.fee,
                    "filled_at": now,
                    "broker": self.name,
                }
            )
            done = quantity >= request.quantity * (1 - 1e-9)
            updates.append(
                {
                    "event_id": execution_id,
                    "status": _FILLED if done else _PARTIALLY_FILLED,
                    "broker_at": now,
                    "filled_quantity": request.quantity if done else quantity,
                    "avg_price": price,
                    "broker_order_id": broker_id,
                    "sequence": 1,
                }
            )
        return PlacedOrder(values, updates, fills)

    def advance(self, bar: Bar) -> list[OrderReport]:
        """Work every open order of `bar.symbol` on this new bar: expire, then fill what it can."""
        reports: list[OrderReport] = []
        working = self.records.open_orders(broker=self.name, symbol=bar.symbol)
        self.working_seen[bar.symbol] = len(working)
        for order in working:
            submitted_on = self._submitted_on(order.client_order_id)
            if submitted_on is None:  # recorded, not yet placed: its submit will place it
                continue
            # An order placed before any bar existed has its day from when it was recorded.
            placed = datetime.fromtimestamp(submitted_on, UTC) if submitted_on else order.created_at
            if order.time_in_force == TimeInForce.DAY.value and _day(bar.ts) > _day(placed):
                expired = self._finish(order, OrderStatus.EXPIRED, "a day order's day ended")
                reports.append(OrderReport(broker_order(expired)))
                continue
            due = submitted_on + self.config.latency_bars * bar.timeframe.seconds
            if _epoch(bar.ts) <= submitted_on or _epoch(bar.ts) < due:
                continue
            fills = self._fill_on_bar(order, bar)
            if fills:
                reports.append(
                    OrderReport(
                        broker_order(self.records.order(order.client_order_id)), tuple(fills)
                    )
                )
        return reports

    def get_order(self, client_order_id: str) -> OrderReport | None:
        try:
            order = self.records.order(client_order_id)
        except ValidationError:
            return None
        if order.broker != self.name:
            return None
        fills = self.records.fills(client_order_id)
        return OrderReport(broker_order(order), tuple(self._fill(order, f) for f in fills))

    def cancel(self, client_order_id: str) -> BrokerOrder:
        order = self.records.order(client_order_id)
        if order.broker != self.name:
            raise ValidationError(f"order {client_order_id} is not at broker {self.name}")
        return broker_order(self._finish(order, OrderStatus.CANCELED, "canceled on request"))

    def cancel_all(self) -> list[BrokerOrder]:
        return [self.cancel(o.client_order_id) for o in self.records.open_orders(broker=self.name)]

    # ---- account ----------------------------------------------------------------------------

    def starting_cash(self) -> float:
        """The cash the account started with, fixed in the records the first time it is asked."""
        if self._starting_cash is not None:
            return self._starting_cash
        kept = self.records.get_config(self._starting_cash_key)
        if kept is None:
            self.records.set_config(
                self._starting_cash_key,
                self.config.starting_cash,
                changed_by=f"broker:{self.name}",
                reason="the paper account opens with its configured starting cash",
            )
            kept = self.records.get_config(self._starting_cash_key)
        self._starting_cash = float(kept)
        return self._starting_cash

    def positions(self) -> dict[str, float]:
        totals = self.records.fill_totals(self.name)
        return {
            s: t.quantity
            for s, t in totals.items()
            if not math.isclose(t.quantity, 0.0, abs_tol=1e-12)
        }

    def account(self) -> BrokerAccount:
        """Cash and equity from the records: starting cash, fills' cash flows, fees; positions
        marked at their symbol's latest bar close (or at cost when there is no bar)."""
        totals = self.records.fill_totals(self.name)
        cash = self.starting_cash() + sum(t.cash_flow - t.fees for t in totals.values())
        positions: dict[str, float] = {}
        value = 0.0
        for symbol, t in totals.items():
            if math.isclose(t.quantity, 0.0, abs_tol=1e-12):
                continue
            positions[symbol] = t.quantity
            bar = self.latest_bar(symbol)
            mark = bar.close if bar is not None else abs(t.cash_flow / t.quantity)  # net cost
            value += t.quantity * mark
        return BrokerAccount(
            cash=cash, equity=cash + value, positions=positions, currency=self.config.currency
        )

    # ---- internals --------------------------------------------------------------------------

    def _fill_on_bar(
        self, order: Order, bar: Bar, fills: list[Fill] | None = None
    ) -> list[BrokerFill]:
        """At most one fill of `order` on `bar`; the order's status follows from its fills
        (`fills`: the order's fills so far when the caller knows them, else read here)."""
        cid = order.client_order_id
        execution_id = f"{cid}:{_epoch(bar.ts)}"
        fills = self.records.fills(cid) if fills is None else fills
        made = next((f for f in fills if f.execution_id == execution_id), None)
        if made is None:
            model = order_fill(self.config, order, bar, sum(f.quantity for f in fills))
            if model.quantity <= 0:
                return []
            made = Fill(
                execution_id=execution_id,
                client_order_id=cid,
                broker=self.name,
                symbol=order.symbol,
                side=order.side,
                quantity=model.quantity,
                price=model.price,
                fee=model.fee,
                filled_at=self._now(),
            )
            recorded = self.records.record_fill(
                execution_id=made.execution_id,
                client_order_id=cid,
                symbol=made.symbol,
                side=made.side,
                quantity=made.quantity,
                price=made.price,
                fee=made.fee,
                filled_at=made.filled_at,
                broker=self.name,
            )
            if recorded:
                fills = [*fills, made]
            else:  # recorded meanwhile by an earlier attempt: that one stands
                fills = self.records.fills(cid)
                made = next(f for f in fills if f.execution_id == execution_id)
        filled = sum(f.quantity for f in fills)
        avg = sum(f.quantity * f.price for f in fills) / filled
        done = filled >= order.quantity * (1 - 1e-9)
        self._update(
            order,
            event=execution_id,
            status=OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED,
            filled_quantity=order.quantity if done else filled,
            avg_price=avg,
            sequence=len(fills),
        )
        return [self._fill(order, made)]

    def _finish(self, order: Order, status: OrderStatus, reason: str) -> Order:
        """Move a working order to a terminal status (a finished one stays as it is)."""
        if order.status not in (
            OrderStatus.NEW.value,
            OrderStatus.SUBMITTED.value,
            OrderStatus.ACCEPTED.value,
            OrderStatus.PARTIALLY_FILLED.value,
        ):
            return order
        self._update(
            order,
            event=f"{order.client_order_id}:{status.value}",
            status=status,
            reason=reason,
            sequence=len(self.records.fills(order.client_order_id)) + 1,
        )
        return self.records.order(order.client_order_id)

    def _update(
        self,
        order: Order,
        *,
        event: str,
        status: OrderStatus,
        filled_quantity: float | None = None,
        avg_price: float | None = None,
        reason: str | None = None,
        sequence: int = 0,
    ) -> None:
        self.records.apply_order_update(
            order.client_order_id,
            event_id=event,
            status=status.value,
            broker_at=self._now(),
            filled_quantity=filled_quantity,
            avg_price=avg_price,
            broker_order_id=_broker_order_id(order.client_order_id),
            reason=reason,
            sequence=sequence,
        )

    def _submitted_on(self, client_order_id: str) -> int | None:
        """The epoch second of the bar an order was placed on, None if it was never placed."""
        prefix = f"{client_order_id}:{_ACCEPTED}:"
        for event in self.records.order_events(client_order_id):
            if event.event_id.startswith(prefix):
                return int(event.event_id[len(prefix) :])
        return None

    def _fills_on(self, order: Order, epoch: int) -> list[BrokerFill]:
        wanted = f"{order.client_order_id}:{epoch}"
        return [
            self._fill(order, f)
            for f in self.records.fills(order.client_order_id)
            if f.execution_id == wanted
        ]

    def _fill(self, order: Order, fill: Fill) -> BrokerFill:
        return self._fill_of(
            order.order_type,
            execution_id=fill.execution_id,
            client_order_id=fill.client_order_id,
            symbol=fill.symbol,
            side=fill.side,
            quantity=fill.quantity,
            price=fill.price,
            fee=fill.fee,
            filled_at=fill.filled_at,
        )

    def _fill_of(
        self,
        order_type: str,
        *,
        execution_id: str,
        client_order_id: str,
        symbol: str,
        side: str,
        quantity: float,
        price: float,
        fee: float,
        filled_at: datetime,
        broker: str | None = None,
    ) -> BrokerFill:
        """A fill of an order of `order_type` as this broker reports it (`broker`: the fill
        row's own, the same as this broker's)."""
        return BrokerFill(
            execution_id=execution_id,
            client_order_id=client_order_id,
            broker_order_id=_broker_order_id(client_order_id),
            symbol=symbol,
            side=Side(side),
            quantity=quantity,
            price=price,
            fee=fee,
            fee_currency=self.config.currency,
            liquidity=Liquidity.MAKER if order_type == OrderType.LIMIT.value else Liquidity.TAKER,
            ts=filled_at,
        )

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


def _unsupported(request: OrderRequest) -> str | None:
    """Why the paper broker refuses `request`, or None."""
    if OrderType(request.order_type) not in _ORDER_TYPES:
        return f"the paper broker takes market and limit orders, not {request.order_type}"
    if TimeInForce(request.time_in_force) not in _TIMES_IN_FORCE:
        return f"the paper broker has no {request.time_in_force} time in force"
    return None


def broker_order(order: Order) -> BrokerOrder:
    """An order of the records as a broker reports it."""
    return order_of_row({name: getattr(order, name) for name in _REPORTED_ORDER_COLUMNS})


_REPORTED_ORDER_COLUMNS = (
    "client_order_id",
    "broker_order_id",
    "symbol",
    "side",
    "quantity",
    "order_type",
    "limit_price",
    "time_in_force",
    "status",
    "filled_quantity",
    "avg_price",
    "reason",
    "updated_at",
    "strategy",
    "intent_id",
    "stop_price",
)
"""The columns of an order row a broker's report of it is made of."""


def order_of_row(row: Mapping[str, Any]) -> BrokerOrder:
    """`broker_order` of an order row as `RecordsStore.record_placed` wrote it (no ORM object
    is built for an order placed in bulk)."""
    return BrokerOrder(
        client_order_id=row["client_order_id"],
        broker_order_id=row["broker_order_id"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        quantity=row["quantity"],
        order_type=OrderType(row["order_type"]),
        limit_price=row["limit_price"],
        time_in_force=TimeInForce(row["time_in_force"]),
        status=OrderStatus(row["status"]),
        filled_quantity=row["filled_quantity"],
        avg_price=row["avg_price"],
        reason=row["reason"],
        updated_at=row["updated_at"],
        strategy=row["strategy"],
        intent_id=row["intent_id"],
        stop_price=row["stop_price"],
    )


def _broker_order_id(client_order_id: str) -> str:
    return f"paper-{client_order_id}"


def _epoch(ts: datetime) -> int:
    return int(ts.timestamp())


def _day(ts: datetime) -> date:
    return ts.astimezone(UTC).date()
