"""Orders and positions at the paper broker as a hypothesis state machine (issue #11).

Each example drives the real `PaperBroker` on real records (a SQLite file of its own, and a
schema of its own in a PostgreSQL database on the machine's server) through market and limit
orders, bars that fill them (in part: a fill takes at most half a bar's volume), cancels, a fill,
a submission and a bar reported again, late and regressing broker updates, and restarts (new store
and broker objects on the same database). After every step:

- no order has filled more than it ordered, and each order's filled quantity is its fills' sum;
- a terminal order (filled, canceled, rejected, expired) never changes again, and no order's
  status moves back;
- the position (the broker's account, the records' ledger) is the sum of the fills;
- no execution id is applied twice (one fill, one ledger entry each);
- the state rebuilt after a restart equals the state before it.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import make_url

from tradeos_lab.brokers import OrderRequest, PaperBroker, PaperConfig
from tradeos_lab.contracts import Bar, OrderStatus, OrderType, Side, TimeInForce
from tradeos_lab.stores.records import RecordsStore
from tradeos_lab.stores.records.order_state import STATUS_RANK

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
SYMBOL = "BTC-USD"
RUN = settings(
    max_examples=15,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CONFIG = PaperConfig(participation=0.5, slippage_bps=5.0, fee_bps=10.0)
#: Each PostgreSQL example migrates a schema of its own (about a second): fewer of them.
PG_RUN = settings(RUN, max_examples=8)
EPS = 1e-9

PRICES = st.sampled_from([98.0, 99.0, 100.0, 101.0, 102.0])
#: Mostly orders that stay working across bars (ioc and fok end on their first bar).
TIMES_IN_FORCE = [
    TimeInForce.DAY,
    TimeInForce.GTC,
    TimeInForce.GTC,
    TimeInForce.IOC,
    TimeInForce.FOK,
]


@dataclass(frozen=True)
class Seen:
    """An order as last seen: its status and filled quantity."""

    status: OrderStatus
    filled: float


def _snapshot(records: RecordsStore, broker: PaperBroker, cids: list[str]) -> dict[str, Any]:
    """Everything the records say about the account: orders, fills, ledger, positions, cash."""
    orders = records.orders_of(cids)
    fills = {cid: records.fills(cid) for cid in cids}
    account = broker.account()
    return {
        "orders": {
            cid: (o.status, o.filled_quantity, o.avg_price, o.broker_order_id, o.reason)
            for cid, o in sorted(orders.items())
        },
        "fills": {
            cid: [(f.execution_id, f.quantity, f.price, f.fee) for f in kept]
            for cid, kept in sorted(fills.items())
        },
        "ledger": [(e.execution_id, e.signed_quantity) for e in records.ledger()],
        "open": [o.client_order_id for o in records.open_orders(broker=broker.name)],
        "positions": broker.positions(),
        "cash": account.cash,
    }


class OrdersAndPositions(RuleBasedStateMachine):
    """The paper broker's orders and positions against a model of what was filled."""

    #: Opens a fresh, migrated records database for one example; returns its URL and a cleanup.
    new_database: Callable[[], tuple[str, Callable[[], None]]]

    orders = Bundle("orders")
    fills = Bundle("fills")

    def __init__(self) -> None:
        super().__init__()
        self.url, self._drop = self.new_database()
        self.records = RecordsStore.from_url(self.url)
        self.broker = self._new_broker()
        self.bar: Bar | None = None
        self.minute = 0
        self.count = 0
        self.requests: dict[str, OrderRequest] = {}
        self.first_fills: dict[str, tuple[str, ...]] = {}
        self.seen: dict[str, Seen] = {}

    def _new_broker(self) -> PaperBroker:
        return PaperBroker(self.records, self._latest_bar, config=CONFIG)

    def _latest_bar(self, symbol: str) -> Bar | None:
        return self.bar if self.bar is not None and symbol == self.bar.symbol else None

    def teardown(self) -> None:
        self.records.close()
        self._drop()

    # ---- rules ----------------------------------------------------------------------------

    @initialize(close=PRICES, volume=st.sampled_from([0.0, 1.0, 3.0, 10.0]))
    def first_bar(self, close: float, volume: float) -> None:
        self._new_bar(close, volume, minutes=0)

    @rule(
        bars=st.lists(
            st.tuples(
                PRICES,
                st.sampled_from([0.0, 1.0, 2.0, 3.0, 10.0]),
                st.sampled_from([1, 1, 1, 24 * 60]),
            ),
            min_size=1,
            max_size=3,
        )
    )
    def bar(self, bars: list[tuple[float, float, int]]) -> None:
        """New bars work the open orders (a jump of a day expires the day orders)."""
        for close, volume, minutes in bars:
            self._new_bar(close, volume, minutes=minutes)
            assert self.bar is not None
            self.broker.advance(self.bar)

    @rule()
    def bar_again(self) -> None:
        """The same bar handed over again (a redelivered bar) fills nothing more."""
        assert self.bar is not None
        before = self._fill_ids()
        self.broker.advance(self.bar)
        assert self._fill_ids() == before

    @rule(
        target=orders,
        side=st.sampled_from([Side.BUY, Side.SELL]),
        quantity=st.sampled_from([1.0, 2.0, 4.0, 5.0]),
        limit=st.none() | PRICES,
        tif=st.sampled_from(TIMES_IN_FORCE),
        together=st.booleans(),
    )
    def submit(
        self,
        side: Side,
        quantity: float,
        limit: float | None,
        tif: TimeInForce,
        together: bool,
    ) -> str:
        """A market or limit order, alone (`submit`) or in a batch (`submit_many`)."""
        self.count += 1
        cid = f"o-{self.count}"
        request = OrderRequest(
            client_order_id=cid,
            symbol=SYMBOL,
            side=side,
            quantity=quantity,
            order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
            limit_price=limit,
            time_in_force=tif,
            strategy="machine",
        )
        if together:
            (report,) = self.broker.submit_many([request])
        else:
            report = self.broker.submit(request)
        self.requests[cid] = request
        self.first_fills[cid] = tuple(f.execution_id for f in report.fills)
        assert report.order.filled_quantity <= quantity * (1 + EPS)
        return cid

    @rule(cid=orders, together=st.booleans())
    def submit_again(self, cid: str, together: bool) -> None:
        """A repeated submission (a redelivered intent) places nothing and answers as before."""
        before = self._fill_ids()
        request = self.requests[cid]
        if together:
            (report,) = self.broker.submit_many([request])
        else:
            report = self.broker.submit(request)
        assert tuple(f.execution_id for f in report.fills) == self.first_fills[cid]
        assert self._fill_ids() == before

    @rule(cid=orders)
    def cancel(self, cid: str) -> None:
        before = self.records.order(cid)
        after = self.broker.cancel(cid)
        if OrderStatus(before.status).is_terminal:
            assert after.status.value == before.status
        else:
            assert after.status is OrderStatus.CANCELED
        assert after.filled_quantity == pytest.approx(before.filled_quantity)

    @rule(
        cid=orders,
        status=st.sampled_from([OrderStatus.ACCEPTED, OrderStatus.CANCELED, OrderStatus.EXPIRED]),
        late=st.booleans(),
    )
    def broker_update(self, cid: str, status: OrderStatus, late: bool) -> None:
        """A broker update under an event id of its own: a late one (older than the last one
        applied) changes nothing; none moves a terminal order or a status back; a cancel or an
        expiry of a working order ends it with its fills kept."""
        self.count += 1
        before = self.records.order(cid)
        last = before.broker_updated_at or datetime.now(UTC)
        self.records.apply_order_update(
            cid,
            event_id=f"{cid}:update:{self.count}",
            status=status.value,
            broker_at=last - timedelta(minutes=1) if late else datetime.now(UTC),
        )
        after = self.records.order(cid)
        was, now = OrderStatus(before.status), OrderStatus(after.status)
        assert after.filled_quantity == before.filled_quantity
        if late or was.is_terminal:
            assert (now, after.updated_at) == (was, before.updated_at)
        elif status is OrderStatus.ACCEPTED:
            assert now is was
        else:
            assert now is status

    @rule(target=fills, cid=orders)
    def note_fills(self, cid: str) -> list[str]:
        """Name an order's fills for the replay rule."""
        return [f.execution_id for f in self.records.fills(cid)]

    @rule(execution_ids=consumes(fills))
    def replay_fill(self, execution_ids: list[str]) -> None:
        """A fill reported again under its execution id (as a broker's stream may) is neither
        recorded nor applied to the order a second time."""
        for execution_id in execution_ids:
            cid = execution_id.rsplit(":", 1)[0]
            fill = next(f for f in self.records.fills(cid) if f.execution_id == execution_id)
            order = self.records.order(cid)
            again = self.records.record_fill(
                execution_id=fill.execution_id,
                client_order_id=fill.client_order_id,
                symbol=fill.symbol,
                side=fill.side,
                quantity=fill.quantity,
                price=fill.price,
                filled_at=fill.filled_at,
                fee=fill.fee,
                broker=fill.broker,
            )
            assert again is False
            applied = self.records.apply_order_update(
                cid,
                event_id=execution_id,
                status=OrderStatus.PARTIALLY_FILLED.value
                if fill.quantity < order.quantity
                else OrderStatus.FILLED.value,
                broker_at=datetime.now(UTC),
                filled_quantity=fill.quantity,
                avg_price=fill.price,
            )
            assert applied is False
            after = self.records.order(cid)
            assert (after.status, after.filled_quantity) == (order.status, order.filled_quantity)

    @rule()
    def restart(self) -> None:
        """New store and broker objects on the same database: the same account."""
        cids = list(self.requests)
        before = _snapshot(self.records, self.broker, cids)
        self.records.close()
        self.records = RecordsStore.from_url(self.url)
        self.broker = self._new_broker()
        assert _snapshot(self.records, self.broker, cids) == before

    # ---- invariants (one read of the records per step) -----------------------------------

    @invariant()
    def orders_fills_and_positions_agree(self) -> None:
        orders = self.records.orders_of(self.requests)
        fills = {cid: self.records.fills(cid) for cid in orders}
        executions = [f.execution_id for kept in fills.values() for f in kept]
        # filled <= ordered, and an order's filled quantity is the sum of its fills
        for cid, order in orders.items():
            filled = sum(f.quantity for f in fills[cid])
            assert order.filled_quantity <= order.quantity * (1 + EPS)
            assert order.filled_quantity == pytest.approx(filled, abs=EPS)
            if order.status == OrderStatus.FILLED.value:
                assert order.filled_quantity == pytest.approx(order.quantity)
        # terminal states are absorbing; no status moves back, no filled quantity decreases
        for cid, order in orders.items():
            now = Seen(OrderStatus(order.status), order.filled_quantity)
            was = self.seen.get(cid)
            if was is not None:
                if was.status.is_terminal:
                    assert now == was, f"{cid} left its terminal state {was} for {now}"
                assert STATUS_RANK[now.status] >= STATUS_RANK[was.status]
                assert now.filled >= was.filled
            self.seen[cid] = now
        # no execution id applied twice: one fill and one ledger entry each
        ledger = [e.execution_id for e in self.records.ledger(symbol=SYMBOL)]
        assert len(set(executions)) == len(executions)
        assert sorted(ledger) == sorted(executions)
        # the position is the sum of the fills, in the broker's account and in the ledger
        signed = sum(
            f.quantity if f.side == Side.BUY.value else -f.quantity
            for kept in fills.values()
            for f in kept
        )
        assert self.broker.positions().get(SYMBOL, 0.0) == pytest.approx(signed, abs=EPS)
        assert self.records.net_quantity(None, SYMBOL) == pytest.approx(signed, abs=EPS)

    # ---- helpers --------------------------------------------------------------------------

    def _new_bar(self, close: float, volume: float, *, minutes: int) -> None:
        self.minute += minutes
        self.bar = Bar(
            symbol=SYMBOL,
            timeframe="1m",  # type: ignore[arg-type]
            ts=T0 + timedelta(minutes=self.minute),
            open=close,
            high=close + 1.0,
            low=close - 1.0,
            close=close,
            volume=volume,
            source="test",
        )

    def _fill_ids(self) -> list[str]:
        return [f.execution_id for cid in self.requests for f in self.records.fills(cid)]


# ---- the two record backends -------------------------------------------------------------------


def _run(new_database: Callable[[], tuple[str, Callable[[], None]]], run: Any = RUN) -> None:
    machine = type(
        "OrdersAndPositionsMachine",
        (OrdersAndPositions,),
        {"new_database": staticmethod(new_database)},
    )
    run_state_machine_as_test(machine, settings=run)


def test_orders_and_positions_on_sqlite(tmp_path: Path) -> None:
    template = tmp_path / "template.db"
    with RecordsStore.from_url(f"sqlite:///{template}") as store:
        store.upgrade()

    def new_database() -> tuple[str, Callable[[], None]]:
        path = tmp_path / f"records-{uuid.uuid4().hex[:8]}.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}", lambda: path.unlink(missing_ok=True)

    _run(new_database)


@pytest.mark.postgres
def test_orders_and_positions_on_postgresql(pg_url: str) -> None:
    database = make_url(pg_url)
    dsn = database.set(drivername="postgresql").render_as_string(hide_password=False)

    def new_database() -> tuple[str, Callable[[], None]]:
        schema = f"machine_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url = database.update_query_dict({"options": f"-csearch_path={schema}"})
        with RecordsStore.from_url(url) as store:
            store.upgrade()

        def drop() -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")

        return url.render_as_string(hide_password=False), drop

    _run(new_database, PG_RUN)
