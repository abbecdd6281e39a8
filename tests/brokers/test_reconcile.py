"""Reconciliation of the records (SQLite and PostgreSQL) with the paper broker and with Alpaca
paper (the local trading server): unknown orders and fills imported once, state differences
advanced, position mismatches halting the symbol REDUCING until they agree, a broker that does
not report changing nothing; the halts on the machine's Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from alpaca_trading_server import API_KEY, SECRET_KEY, AlpacaTradingServer, Fault
from sqlalchemy import select

from tradeos_lab.brokers import AlpacaBroker, OrderRequest, PaperBroker
from tradeos_lab.brokers.reconcile import Kind, Outcome, reconcile
from tradeos_lab.contracts import Bar, OrderStatus, OrderType, Side, TimeInForce
from tradeos_lab.errors import ValidationError
from tradeos_lab.keys import Keys
from tradeos_lab.retry import RetryPolicy
from tradeos_lab.stores.records import Fill, Order, RecordsStore
from tradeos_lab.tiers.flags import Flags, KillMode, KillSource, KillSwitches

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
BAR = Bar(
    symbol="AAPL",
    timeframe="1m",  # type: ignore[arg-type]
    ts=T0,
    open=100.0,
    high=101.0,
    low=99.0,
    close=100.0,
    volume=1_000.0,
    source="test",
)
"""The latest bar the paper brokers of these tests fill AAPL against."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def records(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordsStore]:
    """The records this test reconciles, on SQLite and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'records.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    store = RecordsStore.from_url(url)
    store.upgrade()
    yield store
    store.close()


@pytest.fixture
def trail() -> list[dict[str, Any]]:
    return []


def _switches(
    shared_redis: redis.Redis, keys: Keys, trail: list[dict[str, Any]], source: KillSource
) -> KillSwitches:
    return KillSwitches(shared_redis, keys=keys, source=source, audit=trail.append)


@pytest.fixture
def manual(shared_redis: redis.Redis, keys: Keys, trail: list[dict[str, Any]]) -> KillSwitches:
    """The operator's switches; the registry armed."""
    switches = _switches(shared_redis, keys, trail, KillSource.MANUAL)
    switches.arm(actor="user:ops", reason="reconciliation test")
    return switches


@pytest.fixture
def switches(
    shared_redis: redis.Redis, keys: Keys, trail: list[dict[str, Any]], manual: KillSwitches
) -> KillSwitches:
    """The reconciliation's own switches."""
    return _switches(shared_redis, keys, trail, KillSource.RECONCILIATION)


@pytest.fixture
def agent(shared_redis: redis.Redis, keys: Keys, trail: list[dict[str, Any]]) -> KillSwitches:
    return _switches(shared_redis, keys, trail, KillSource.AGENT)


@pytest.fixture
def venue(tmp_path: Path) -> Iterator[PaperBroker]:
    """A paper broker keeping its account in records of its own: a venue whose orders the
    records under test do not share."""
    store = RecordsStore.from_url(f"sqlite:///{tmp_path / 'venue.db'}")
    store.upgrade()
    yield PaperBroker(store, lambda symbol: BAR if symbol == "AAPL" else None)
    store.close()


@pytest.fixture
def make_alpaca(
    alpaca_server: AlpacaTradingServer, flags: Flags, records: RecordsStore
) -> Iterator[Callable[..., AlpacaBroker]]:
    """Alpaca brokers on the local server, told what fills the records hold."""
    made: list[AlpacaBroker] = []

    def make(server: AlpacaTradingServer = alpaca_server, **overrides: Any) -> AlpacaBroker:
        options: dict[str, Any] = {
            "api_key": API_KEY,
            "secret_key": SECRET_KEY,
            "url": server.url,
            "timeout": 2.0,
            "retry": RetryPolicy(attempts=2, base=0.01, cap=0.02),
            "filled_so_far": records.filled_so_far,
        }
        options.update(overrides)
        broker = AlpacaBroker(flags, **options)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def alpaca(make_alpaca: Callable[..., AlpacaBroker]) -> AlpacaBroker:
    return make_alpaca()


def _request(cid: str, symbol: str = "AAPL", quantity: float = 10.0, **kw: Any) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=symbol, side=Side.BUY, quantity=quantity, **kw)


def _limit(cid: str, quantity: float = 10.0, symbol: str = "AAPL") -> OrderRequest:
    return _request(
        cid,
        symbol,
        quantity,
        order_type=OrderType.LIMIT,
        limit_price=100.0,
        time_in_force=TimeInForce.GTC,
    )


def _rows(records: RecordsStore) -> tuple[list[Order], list[Fill]]:
    with records.session() as s:
        return list(s.scalars(select(Order))), list(s.scalars(select(Fill)))


def _actions(records: RecordsStore) -> list[str]:
    return [a.action for a in records.audit_trail()]


def _reconciliation_switch(manual: KillSwitches, symbol: str) -> Any:
    found = [
        s
        for s in manual.state().switches
        if s.source is KillSource.RECONCILIATION and s.target == symbol
    ]
    return found[0] if found else None


# ---- the paper broker ---------------------------------------------------------------------------


def test_an_order_the_records_do_not_know_is_imported_once_from_a_paper_venue(
    records: RecordsStore, venue: PaperBroker, switches: KillSwitches
) -> None:
    venue.submit(_request("outside-1"))
    first = reconcile(records, venue, switches=switches)
    assert first.outcome is Outcome.RECONCILED, first.differences
    assert [(d.kind, d.action, d.resolved) for d in first.differences] == [
        (Kind.UNKNOWN_ORDER, "imported", True)
    ]
    order = records.order("outside-1")
    assert (order.external, order.status, order.broker) == (True, "filled", "paper")
    (fill,) = records.fills("outside-1")
    assert fill.external is True
    assert records.ledger_positions("paper") == {"AAPL": pytest.approx(10.0)}
    assert _actions(records) == ["order.imported"]

    again = reconcile(records, venue, switches=switches)
    assert (again.outcome, again.differences, again.messages) == (Outcome.RECONCILED, (), ())
    orders, fills = _rows(records)
    assert (len(orders), len(fills)) == (1, 1)
    assert _actions(records) == ["order.imported"]


def test_the_stacks_own_paper_broker_agrees_with_its_records(
    records: RecordsStore, switches: KillSwitches
) -> None:
    """The paper broker's account is the records' rows: nothing to import or halt."""
    paper = PaperBroker(records, lambda _symbol: BAR)
    paper.submit(_request("tl-own-1"))
    paper.submit(_limit("tl-own-2", quantity=1.0))
    result = reconcile(records, paper, switches=switches)
    assert (result.outcome, result.differences, result.halted) == (Outcome.RECONCILED, (), ())


def test_a_dry_run_reports_what_it_would_do_and_changes_nothing(
    records: RecordsStore, venue: PaperBroker, manual: KillSwitches
) -> None:
    venue.submit(_request("outside-2"))
    result = reconcile(records, venue, switches=None, apply=False)
    assert result.outcome is Outcome.MISMATCHED
    assert [(d.kind, d.action) for d in result.differences] == [
        (Kind.UNKNOWN_ORDER, "would import")
    ]  # the fills it would import make the positions agree
    assert _rows(records) == ([], [])
    assert records.audit_trail() == [] and records.risk_events() == []
    assert _reconciliation_switch(manual, "AAPL") is None


def test_applying_needs_switches_of_the_reconciliation_source(
    records: RecordsStore, venue: PaperBroker, agent: KillSwitches
) -> None:
    for wrong in (None, agent):
        with pytest.raises(ValidationError, match="own source"):
            reconcile(records, venue, switches=wrong)


# ---- Alpaca paper -------------------------------------------------------------------------------


def test_an_order_placed_outside_at_alpaca_is_imported_once_with_its_fills(
    records: RecordsStore,
    alpaca: AlpacaBroker,
    make_alpaca: Callable[..., AlpacaBroker],
    alpaca_server: AlpacaTradingServer,
    switches: KillSwitches,
) -> None:
    make_alpaca().submit(_limit("by-hand-1"))  # placed from another client: the app, say
    alpaca_server.fill("by-hand-1", 4.0, 99.0)
    alpaca_server.fill("by-hand-1", 6.0, 100.0)
    first = reconcile(records, alpaca, switches=switches)
    assert first.outcome is Outcome.RECONCILED, first.differences
    order = records.order("by-hand-1")
    assert (order.external, order.status, order.broker) == (True, "filled", "alpaca")
    assert order.filled_quantity == pytest.approx(10.0)
    assert order.avg_price == pytest.approx(99.6)
    assert sum(f.quantity for f in records.fills("by-hand-1")) == pytest.approx(10.0)
    assert records.ledger_positions("alpaca") == {"AAPL": pytest.approx(10.0)}

    # A fresh broker object (a restart) on the same records imports nothing again.
    again = reconcile(records, make_alpaca(), switches=switches)
    assert (again.outcome, again.differences) == (Outcome.RECONCILED, ())
    orders, fills = _rows(records)
    assert (len(orders), sum(f.quantity for f in fills)) == (1, pytest.approx(10.0))
    assert _actions(records) == ["order.imported"]


def test_a_state_the_records_missed_is_advanced_and_its_fill_imported(
    records: RecordsStore,
    alpaca: AlpacaBroker,
    alpaca_server: AlpacaTradingServer,
    switches: KillSwitches,
) -> None:
    """The order Execution placed filled while the stream was down: the records still hold it
    accepted, without the fill."""
    placed = alpaca.submit(_limit("tl-placed-1"))
    records.record_order(
        client_order_id="tl-placed-1",
        symbol="AAPL",
        side="buy",
        quantity=10.0,
        order_type="limit",
        limit_price=100.0,
        time_in_force="gtc",
        strategy="momentum",
        broker="alpaca",
    )
    records.apply_order_update(
        "tl-placed-1",
        event_id="ev-accepted",
        status="accepted",
        broker_at=placed.order.updated_at,
        broker_order_id=placed.order.broker_order_id,
    )
    alpaca_server.fill("tl-placed-1", 10.0, 98.5, publish=False)

    result = reconcile(records, alpaca, switches=switches)
    assert result.outcome is Outcome.RECONCILED, result.differences
    assert {(d.kind, d.resolved) for d in result.differences} == {
        (Kind.UNKNOWN_FILL, True),
        (Kind.ORDER_STATE, True),
    }
    order = records.order("tl-placed-1")
    assert (order.status, order.external) == (OrderStatus.FILLED.value, False)
    assert order.avg_price == pytest.approx(98.5)
    (fill,) = records.fills("tl-placed-1")
    assert (fill.quantity, fill.external) == (pytest.approx(10.0), True)
    assert records.net_quantity("momentum", "AAPL") == pytest.approx(10.0)
    assert sorted(_actions(records)) == ["fill.imported", "order.reconciled"]

    assert reconcile(records, alpaca, switches=switches).differences == ()
    assert len(records.fills("tl-placed-1")) == 1


def test_a_position_mismatch_halts_the_symbol_reducing_until_it_is_resolved(
    records: RecordsStore,
    alpaca: AlpacaBroker,
    alpaca_server: AlpacaTradingServer,
    switches: KillSwitches,
    manual: KillSwitches,
    agent: KillSwitches,
) -> None:
    alpaca_server.positions["MSFT"] = 5.0  # moved in from elsewhere: no order explains it
    manual.engage("symbol", "HALTED", target="AAPL", actor="user:ops", reason="own halt")
    halted = reconcile(records, alpaca, switches=switches)
    assert halted.outcome is Outcome.MISMATCHED
    assert halted.halted == ("MSFT",)
    (difference,) = halted.remaining
    assert (difference.kind, difference.records, difference.broker) == (Kind.POSITION, "0", "5")
    switch = _reconciliation_switch(manual, "MSFT")
    assert (switch.mode, switch.actor) == (KillMode.REDUCING, "reconciliation:alpaca")
    (event,) = records.risk_events()
    assert (event.kind, event.severity, event.scope) == (
        "reconciliation",
        "critical",
        "symbol:MSFT",
    )
    decision = manual.check_order("momentum", "MSFT", "buy", 1, book=records)
    assert (decision.allowed, decision.mode) == (False, KillMode.REDUCING)

    # The agent's API cannot lift it; a second run neither halts nor reports it again.
    agent.clear("symbol", target="MSFT", actor="agent:risk", reason="looks fine")
    assert _reconciliation_switch(manual, "MSFT") is not None
    still = reconcile(records, alpaca, switches=switches)
    assert (still.outcome, still.halted) == (Outcome.MISMATCHED, ())
    assert len(records.risk_events()) == 1

    alpaca_server.positions["MSFT"] = 0.0  # resolved at the broker
    resolved = reconcile(records, alpaca, switches=switches)
    assert (resolved.outcome, resolved.cleared) == (Outcome.RECONCILED, ("MSFT",))
    assert _reconciliation_switch(manual, "MSFT") is None
    assert manual.check_order("momentum", "MSFT", "buy", 1, book=records).allowed
    # Only the halt the reconciliation set was lifted.
    assert not manual.check_order("momentum", "AAPL", "buy", 1, book=records).allowed


def test_a_position_that_moves_while_it_is_read_is_judged_by_the_next_run(
    records: RecordsStore,
    alpaca: AlpacaBroker,
    alpaca_server: AlpacaTradingServer,
    switches: KillSwitches,
    manual: KillSwitches,
) -> None:
    def moved() -> None:
        alpaca_server.positions["MSFT"] = 5.0

    alpaca_server.then("GET", "/v2/orders", moved)  # between the two reads of the positions
    first = reconcile(records, alpaca, switches=switches)
    assert first.halted == ()
    (difference,) = first.remaining
    assert (difference.kind, difference.broker) == (Kind.POSITION, "5")
    assert "next run" in difference.action
    assert _reconciliation_switch(manual, "MSFT") is None
    assert reconcile(records, alpaca, switches=switches).halted == ("MSFT",)


def test_a_halt_held_by_two_brokers_lifts_only_when_both_agree(
    records: RecordsStore,
    alpaca: AlpacaBroker,
    alpaca_server: AlpacaTradingServer,
    make_alpaca: Callable[..., AlpacaBroker],
    switches: KillSwitches,
    manual: KillSwitches,
) -> None:
    other_server = AlpacaTradingServer()
    other_server.start()
    try:
        other = make_alpaca(other_server, name="alpaca_live")
        alpaca_server.positions["MSFT"] = 5.0
        other_server.positions["MSFT"] = -2.0
        reconcile(records, alpaca, switches=switches)
        reconcile(records, other, switches=switches)
        switch = _reconciliation_switch(manual, "MSFT")
        assert switch.actor == "reconciliation:alpaca/alpaca_live"

        alpaca_server.positions["MSFT"] = 0.0
        assert reconcile(records, alpaca, switches=switches).cleared == ("MSFT",)
        switch = _reconciliation_switch(manual, "MSFT")
        assert (switch.mode, switch.actor) == (KillMode.REDUCING, "reconciliation:alpaca_live")

        other_server.positions["MSFT"] = 0.0
        reconcile(records, other, switches=switches)
        assert _reconciliation_switch(manual, "MSFT") is None
    finally:
        other_server.stop()


@pytest.mark.parametrize(
    "path",
    ["/v2/orders", "/v2/positions"],
    ids=["orders", "positions"],
)
def test_a_broker_that_does_not_report_is_unknown_and_nothing_changes(
    records: RecordsStore,
    alpaca: AlpacaBroker,
    make_alpaca: Callable[..., AlpacaBroker],
    alpaca_server: AlpacaTradingServer,
    switches: KillSwitches,
    manual: KillSwitches,
    path: str,
) -> None:
    alpaca_server.positions["MSFT"] = 5.0
    reconcile(records, alpaca, switches=switches)  # halted
    make_alpaca().submit(_limit("by-hand-2"))  # an order the records do not know
    alpaca_server.positions.clear()  # "flat" is what a missing report must never be read as
    alpaca_server.inject("GET", path, Fault(status=503), Fault(reset=True), Fault(status=500))
    result = reconcile(records, alpaca, switches=switches)
    assert result.outcome is Outcome.UNKNOWN
    assert "did not report" in result.reason
    assert (result.differences, result.halted, result.cleared) == ((), (), ())
    assert records.find_order("by-hand-2") is None
    assert _reconciliation_switch(manual, "MSFT") is not None
    warning = records.risk_events()[-1]
    assert (warning.severity, warning.scope) == ("warning", "broker:alpaca")


def test_a_timeout_is_unknown_too(
    records: RecordsStore,
    make_alpaca: Callable[..., AlpacaBroker],
    alpaca_server: AlpacaTradingServer,
    switches: KillSwitches,
) -> None:
    slow = make_alpaca(timeout=0.2, retry=RetryPolicy(attempts=1))
    alpaca_server.inject("GET", "/v2/orders", Fault(delay=1.0))
    result = reconcile(records, slow, switches=switches)
    assert result.outcome is Outcome.UNKNOWN
    assert _rows(records) == ([], [])


def test_closed_orders_older_than_the_lookback_are_not_listed(
    records: RecordsStore,
    alpaca: AlpacaBroker,
    alpaca_server: AlpacaTradingServer,
    switches: KillSwitches,
) -> None:
    """Such an order's fills then show as a position mismatch, never as silently flat."""
    alpaca.submit(_limit("by-hand-3"))
    alpaca_server.fill("by-hand-3", 10.0, 100.0, publish=False)
    later = datetime.now(UTC) + timedelta(days=2)
    result = reconcile(records, alpaca, switches=switches, now=later)
    assert records.find_order("by-hand-3") is None
    assert [d.kind for d in result.remaining] == [Kind.POSITION]


def test_alpaca_orders_are_listed_page_by_page(
    records: RecordsStore,
    alpaca: AlpacaBroker,
    make_alpaca: Callable[..., AlpacaBroker],
    switches: KillSwitches,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("tradeos_lab.brokers.alpaca.ORDERS_PAGE", 2)
    placing = make_alpaca()
    for n in range(5):
        placing.submit(_limit(f"by-hand-page-{n}", quantity=1.0))
    placing.cancel("by-hand-page-0")  # a closed one among them
    listed = alpaca.orders(since=datetime.now(UTC) - timedelta(hours=1))
    assert sorted(r.order.client_order_id for r in listed) == [
        f"by-hand-page-{n}" for n in range(5)
    ]
    result = reconcile(records, alpaca, switches=switches)
    assert [d.kind for d in result.differences] == [Kind.UNKNOWN_ORDER] * 5
    assert records.order("by-hand-page-0").status == OrderStatus.CANCELED.value
