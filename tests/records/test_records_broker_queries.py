"""The records' queries a broker keeps its account with: open orders, an order's fills, fill
totals per symbol, and a kept signal by id (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tradeos_lab.contracts import Message, ModifiedSignal, RawSignal, derive, new_message
from tradeos_lab.errors import StoreError, ValidationError
from tradeos_lab.stores.records import PlacedOrder, RecordsStore

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def _raw_signal() -> Message:
    """A kept-signal test's raw signal of sma_cross on BTC-USD at T0."""
    return new_message(
        RawSignal(
            strategy="sma_cross",
            symbol="BTC-USD",
            timeframe="1m",
            ts=T0,
            direction="long",
            strength=0.5,
            confidence=0.7,
            features={"sma_fast": 101.0},
            source_message_id="01890000-0000-7000-8000-000000000000",
        ),
        producer="signal_engine",
    )


def _order(store: RecordsStore, cid: str, side: str = "buy", broker: str = "paper") -> None:
    store.record_order(
        client_order_id=cid, symbol="BTC-USD", side=side, quantity=3, broker=broker, at=T0
    )


def _fill(store: RecordsStore, eid: str, cid: str, side: str, qty: float, price: float) -> None:
    store.record_fill(
        execution_id=eid,
        client_order_id=cid,
        symbol="BTC-USD",
        side=side,
        quantity=qty,
        price=price,
        fee=0.5,
        filled_at=T0 + timedelta(seconds=len(eid)),
    )


def test_open_orders_are_those_still_working_at_their_broker(store: RecordsStore) -> None:
    _order(store, "a")
    _order(store, "b")
    _order(store, "c", broker="other")
    store.apply_order_update("b", event_id="b1", status="filled", broker_at=T0, avg_price=1.0)
    assert [o.client_order_id for o in store.open_orders(broker="paper")] == ["a"]
    assert [o.client_order_id for o in store.open_orders()] == ["a", "c"]
    assert store.open_orders(symbol="ETH-USD") == []


def test_strategy_books_are_each_strategys_position_working_orders_and_the_accounts(
    store: RecordsStore,
) -> None:
    def order(cid: str, strategy: str, side: str, quantity: float) -> None:
        store.record_order(
            client_order_id=cid,
            symbol="BTC-USD",
            side=side,
            quantity=quantity,
            strategy=strategy,
            broker="paper",
            at=T0,
        )

    order("a-filled", "a", "buy", 3)
    store.apply_order_update(
        "a-filled", event_id="f1", status="filled", broker_at=T0, filled_quantity=3
    )
    _fill(store, "e1", "a-filled", "buy", 3, 100.0)
    order("a-working", "a", "sell", 2)
    store.apply_order_update(
        "a-working", event_id="w1", status="partially_filled", broker_at=T0, filled_quantity=0.5
    )
    _fill(store, "e22", "a-working", "sell", 0.5, 101.0)
    order("b-filled", "b", "sell", 1)
    _fill(store, "e333", "b-filled", "sell", 1, 99.0)
    books, recorded = store.strategy_books(
        [("a", "BTC-USD"), ("c", "BTC-USD")], client_order_ids=["a-working", "nowhere"]
    )
    assert books["a", "BTC-USD"].held == pytest.approx(2.5)
    assert books["a", "BTC-USD"].working == pytest.approx(-1.5)
    assert books["a", "BTC-USD"].account == pytest.approx(1.5)
    assert (books["c", "BTC-USD"].held, books["c", "BTC-USD"].working) == (0.0, 0)
    assert books["c", "BTC-USD"].account == pytest.approx(1.5)
    assert recorded == {"a-working"}
    assert store.net_quantity("a", "BTC-USD") == books["a", "BTC-USD"].held
    assert store.net_quantity(None, "BTC-USD") == books["a", "BTC-USD"].account


def test_working_order_reads_search_the_status_index_not_the_order_history(
    store: RecordsStore,
) -> None:
    """The paper broker's open orders of a symbol (each bar) and Feasibility's working orders of
    a strategy in a symbol (each batch) read the working orders through the status index, so
    their cost does not grow with the orders ever recorded. SQLite's plan, of the statements as
    they run."""
    from sqlalchemy import event

    if store.engine.dialect.name != "sqlite":
        pytest.skip("the query plan checked is SQLite's")
    ran: list[tuple[str, object]] = []

    def capture(_conn: object, _cursor: object, sql: str, params: object, *_: object) -> None:
        if sql.lstrip().upper().startswith("SELECT") and "FROM orders" in sql:
            ran.append((sql, params))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        store.open_orders(broker="paper", symbol="BTC-USD")
        store.strategy_books([("s", "BTC-USD")])
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    assert len(ran) == 2
    with store.engine.connect() as conn:
        for sql, params in ran:
            plan = " ".join(
                r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
            )
            assert "USING INDEX ix_orders_status_symbol_strategy (status=? AND symbol=?" in plan, (
                plan
            )


def test_fills_of_an_order_oldest_first(store: RecordsStore) -> None:
    _order(store, "a")
    _fill(store, "ex-22", "a", "buy", 1, 100.0)
    _fill(store, "ex-1", "a", "buy", 2, 101.0)
    assert [f.execution_id for f in store.fills("a")] == ["ex-1", "ex-22"]


def test_fill_totals_net_quantity_cash_and_fees_per_symbol(store: RecordsStore) -> None:
    _order(store, "a")
    _order(store, "s", side="sell")
    _fill(store, "e1", "a", "buy", 2, 100.0)
    _fill(store, "e2", "a", "buy", 1, 110.0)
    _fill(store, "e3", "s", "sell", 1, 120.0)
    _fill(store, "e3", "s", "sell", 1, 120.0)  # a repeat report counts once
    totals = store.fill_totals("paper")["BTC-USD"]
    assert totals.quantity == pytest.approx(2.0)
    assert totals.cash_flow == pytest.approx(-200.0 - 110.0 + 120.0)
    assert totals.fees == pytest.approx(1.5)
    assert store.fill_totals("other") == {}


def test_signal_by_message_id(store: RecordsStore) -> None:
    raw = _raw_signal()
    assert store.signal(raw.message_id) is None
    store.record_signal(raw)  # type: ignore[arg-type]
    kept = store.signal(raw.message_id)
    assert kept is not None and kept.payload["source_message_id"] == raw.payload.source_message_id
    with pytest.raises(ValidationError):
        store.signal("")
    rows = store.signal_rows_of([raw.message_id, "01890000-0000-7000-8000-000000000009"])
    assert list(rows) == [raw.message_id]
    row = rows[raw.message_id]
    assert (row.strategy, row.symbol, row.ts, row.payload["timeframe"]) == (
        "sma_cross",
        "BTC-USD",
        T0,
        "1m",
    )


def test_raw_signal_ids_of_name_what_each_kept_signal_was_made_from(store: RecordsStore) -> None:
    raw = _raw_signal()
    modified = derive(
        raw,
        ModifiedSignal(
            raw_signal_id=raw.message_id,
            strategy="sma_cross",
            symbol="BTC-USD",
            timeframe="1m",
            ts=T0,
            direction="long",
            raw_strength=0.5,
            adjusted_strength=0.4,
            confidence=0.7,
            modifiers=[],
        ),
        producer="signal_modifier",
    )
    store.keep_messages([raw, modified])  # type: ignore[list-item]
    unknown = "01890000-0000-7000-8000-000000000009"
    ids = [modified.message_id, raw.message_id, unknown, modified.message_id]
    found = store.raw_signal_ids_of(ids)
    # what the kept payloads say, read whole
    assert found == {
        k: row.payload.get("raw_signal_id") for k, row in store.signal_rows_of(ids).items()
    }
    assert found == {modified.message_id: raw.message_id, raw.message_id: None}
    assert store.raw_signal_ids_of([]) == {}
    with pytest.raises(ValidationError):
        store.raw_signal_ids_of([""])


def _placed(cid: str) -> PlacedOrder:
    """A paper order accepted and filled on one bar, as the paper broker places it in bulk."""
    order = {"client_order_id": cid, "symbol": "BTC-USD", "side": "buy", "quantity": 2.0}
    accepted = {"event_id": f"{cid}:accepted:1", "status": "accepted", "broker_at": T0}
    filled = {
        "event_id": f"{cid}:1",
        "status": "filled",
        "broker_at": T0,
        "filled_quantity": 2.0,
        "avg_price": 100.0,
        "sequence": 1,
    }
    fill = {
        "execution_id": f"{cid}:1",
        "client_order_id": cid,
        "symbol": "BTC-USD",
        "side": "buy",
        "quantity": 2.0,
        "price": 100.0,
        "filled_at": T0,
    }
    return PlacedOrder({**order, "broker": "paper", "at": T0}, [accepted, filled], [fill])


def test_record_placed_with_the_known_orders_of_its_batch_writes_what_it_reads_itself(
    store: RecordsStore,
) -> None:
    with store.batch():
        given = store.record_placed([_placed("a")], known=store.known_orders(["a"]))
    read = store.record_placed([_placed("b")])

    def same(row: dict[str, object]) -> dict[str, object]:
        drop = ("client_order_id", "broker_order_id", "created_at", "updated_at")
        return {k: v for k, v in row.items() if k not in drop}

    assert [same(r) for r in given] == [same(r) for r in read]
    assert [(f.execution_id, f.quantity) for f in store.fills("a")] == [("a:1", 2.0)]
    assert store.order("a").status == store.order("b").status == "filled"


def test_record_placed_refuses_a_known_order_and_one_recorded_since_the_batch_read(
    store: RecordsStore,
) -> None:
    _order(store, "a")
    with store.batch():
        known = store.known_orders(["a", "b"])
        assert known == {"a"}
        with pytest.raises(ValidationError, match="already recorded"):
            store.record_placed([_placed("a")], known=known)
    assert store.fills("a") == []

    # recorded after the read that `known` holds: the orders' unique client order id refuses it
    def placed_after_recorded() -> None:
        with store.batch():
            known = store.known_orders(["b"])
            _order(store, "b")
            store.record_placed([_placed("b")], known=known)

    with pytest.raises(StoreError):
        placed_after_recorded()
    assert store.find_order("b") is None  # the batch rolled back whole
    assert store.fills("b") == []


def test_find_order_is_none_for_an_unknown_client_order_id(store: RecordsStore) -> None:
    assert store.find_order("a") is None
    _order(store, "a")
    found = store.find_order("a")
    assert found is not None and found.broker == "paper"


def test_known_fills_are_the_execution_ids_the_records_hold(store: RecordsStore) -> None:
    _order(store, "a")
    _fill(store, "e1", "a", "buy", 1, 100.0)
    _fill(store, "e2", "a", "buy", 1, 101.0)
    assert store.known_fills(["e1", "nope", "e2", "e1"]) == {"e1", "e2"}
    assert store.known_fills([]) == set()
    with pytest.raises(ValidationError):
        store.known_fills(["has space"])
