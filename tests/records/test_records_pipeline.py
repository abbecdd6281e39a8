"""What the pipeline writes to the records, on SQLite and PostgreSQL: order life cycle and its
broker events, the per-strategy position ledger, and the bus messages kept past stream trimming."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from tradeos_lab.contracts import (
    Audit,
    Intent,
    ModifiedSignal,
    RawSignal,
    RiskEvent,
    derive,
    new_message,
    new_message_id,
)
from tradeos_lab.contracts.types import CLIENT_ORDER_ID_MAX_LENGTH
from tradeos_lab.errors import ValidationError
from tradeos_lab.stores.records import RecordsStore

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def _order(store: RecordsStore, cid: str = "ord-1", **extra: object) -> bool:
    values: dict[str, object] = {
        "client_order_id": cid,
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 10,
        "strategy": "momo",
        **extra,
    }
    return store.record_order(**values)  # type: ignore[arg-type]


def _fill(
    store: RecordsStore, eid: str, cid: str = "ord-1", side: str = "buy", quantity: float = 4
) -> bool:
    return store.record_fill(
        execution_id=eid,
        client_order_id=cid,
        symbol="AAPL",
        side=side,
        quantity=quantity,
        price=100.0,
        filled_at=T0,
    )


# ---- orders -------------------------------------------------------------------------------------


def test_order_keeps_strategy_stop_price_time_in_force_and_broker(store: RecordsStore) -> None:
    _order(
        store,
        order_type="stop_limit",
        limit_price=101.0,
        stop_price=100.5,
        time_in_force="gtc",
        broker="alpaca",
    )
    order = store.order("ord-1")
    assert (order.strategy, order.stop_price, order.limit_price) == ("momo", 100.5, 101.0)
    assert (order.time_in_force, order.broker, order.status) == ("gtc", "alpaca", "new")
    assert (order.filled_quantity, order.avg_price, order.reason) == (0.0, None, None)


def test_broker_updates_move_the_order_and_each_is_kept_once(store: RecordsStore) -> None:
    _order(store)
    steps = [
        ("ev-1", "accepted", 0, None, None),
        ("ev-2", "partially_filled", 1, 4.0, 100.0),
        ("ev-3", "filled", 2, 10.0, 100.6),
    ]
    for event_id, status, seconds, filled, avg in steps:
        assert store.apply_order_update(
            "ord-1",
            event_id=event_id,
            status=status,
            broker_at=T0 + timedelta(seconds=seconds),
            filled_quantity=filled,
            avg_price=avg,
            broker_order_id="brk-1",
        )
    # The same event delivered again is a no-op, even though it would be "newer" by nothing.
    assert not store.apply_order_update(
        "ord-1", event_id="ev-3", status="filled", broker_at=T0 + timedelta(seconds=2)
    )
    order = store.order("ord-1")
    assert (order.status, order.filled_quantity, order.avg_price) == ("filled", 10.0, 100.6)
    assert order.broker_updated_at == T0 + timedelta(seconds=2)
    events = store.order_events("ord-1")
    assert [(e.event_id, e.applied) for e in events] == [
        ("ev-1", True),
        ("ev-2", True),
        ("ev-3", True),
    ]


def test_late_older_update_is_recorded_but_changes_nothing(store: RecordsStore) -> None:
    _order(store)
    store.apply_order_update(
        "ord-1",
        event_id="ev-2",
        status="partially_filled",
        broker_at=T0 + timedelta(seconds=5),
        filled_quantity=6,
        avg_price=100.0,
    )
    before = store.order("ord-1")
    changed = store.apply_order_update(
        "ord-1", event_id="ev-1", status="accepted", broker_at=T0 + timedelta(seconds=1)
    )
    assert changed is False
    after = store.order("ord-1")
    assert (after.status, after.filled_quantity) == (before.status, before.filled_quantity)
    assert [(e.event_id, e.applied) for e in store.order_events("ord-1")] == [
        ("ev-1", False),
        ("ev-2", True),
    ]


def test_filled_order_never_goes_back_to_new(store: RecordsStore) -> None:
    _order(store)
    store.apply_order_update("ord-1", event_id="ev-1", status="filled", broker_at=T0)
    later_new = store.apply_order_update(
        "ord-1", event_id="ev-2", status="new", broker_at=T0 + timedelta(seconds=9)
    )
    assert later_new is False
    assert store.order("ord-1").status == "filled"


def test_update_filling_more_than_the_order_is_refused(store: RecordsStore) -> None:
    _order(store)
    with pytest.raises(ValidationError, match="exceeds"):
        store.apply_order_update(
            "ord-1",
            event_id="ev-1",
            status="partially_filled",
            broker_at=T0,
            filled_quantity=11,
        )
    assert store.order_events("ord-1") == []
    with pytest.raises(ValidationError, match="status"):
        store.apply_order_update("ord-1", event_id="ev-1", status="done", broker_at=T0)


def test_database_refuses_a_filled_quantity_above_the_order_quantity(store: RecordsStore) -> None:
    """The rule holds for writers that bypass the store too (a CHECK constraint)."""
    _order(store)
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(text("UPDATE orders SET filled_quantity = 11 WHERE client_order_id = 'ord-1'"))


@pytest.mark.postgres
def test_concurrent_updates_are_folded_one_at_a_time(pg_url: str) -> None:
    """Threads racing to apply cumulative fills in any order leave the largest fill: the row
    lock serialises read-advance-write, so no update overwrites a newer one."""
    with RecordsStore.from_url(pg_url) as store:
        store.upgrade()
        _order(store, quantity=100)
        errors: list[BaseException] = []

        def apply(first: int) -> None:
            try:
                for n in range(first, 100, 4):
                    store.apply_order_update(
                        "ord-1",
                        event_id=f"ev-{n}",
                        status="partially_filled",
                        broker_at=T0 + timedelta(milliseconds=n),
                        filled_quantity=float(n),
                        sequence=n,
                    )
            except BaseException as e:  # reported to the test thread below
                errors.append(e)

        threads = [threading.Thread(target=apply, args=(first,)) for first in (1, 2, 3, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        order = store.order("ord-1")
        assert (order.filled_quantity, order.broker_sequence) == (99.0, 99)
        assert len(store.order_events("ord-1")) == 99


# ---- client order ids ---------------------------------------------------------------------------


def test_client_order_id_is_at_most_the_brokers_48_characters(store: RecordsStore) -> None:
    longest = "c" * CLIENT_ORDER_ID_MAX_LENGTH
    assert _order(store, cid=longest)
    with pytest.raises(ValidationError, match=str(CLIENT_ORDER_ID_MAX_LENGTH)):
        _order(store, cid=longest + "c")
    for refused_by_the_contract in ("-leading-dash", "with space", "semi;colon", "é"):
        with pytest.raises(ValidationError, match="client_order_id"):
            _order(store, cid=refused_by_the_contract)
    columns = {
        table: {c["name"]: c["type"] for c in inspect(store.engine).get_columns(table)}
        for table in ("orders", "fills", "trades", "order_events", "position_ledger")
    }
    assert {t: c["client_order_id"].length for t, c in columns.items()} == dict.fromkeys(
        columns, CLIENT_ORDER_ID_MAX_LENGTH
    )


# ---- position ledger ----------------------------------------------------------------------------


def test_fill_is_applied_to_the_ledger_once_per_execution_id(store: RecordsStore) -> None:
    _order(store)
    assert _fill(store, "exec-1")
    assert not _fill(store, "exec-1")  # redelivered
    assert store.net_quantity("momo", "AAPL") == 4.0
    assert [e.execution_id for e in store.ledger(strategy="momo")] == ["exec-1"]


def test_fill_that_contradicts_its_order_is_refused_and_not_applied(store: RecordsStore) -> None:
    _order(store)
    with pytest.raises(ValidationError, match="its order ord-1 a buy of AAPL"):
        _fill(store, "exec-1", side="sell")
    assert store.ledger() == []
    assert store.net_quantity(None, "AAPL") == 0.0


def test_ledger_amounts_are_the_whole_ledgers_amounts_in_its_order(store: RecordsStore) -> None:
    assert store.ledger_amounts() == []
    _order(store, cid="m-buy", strategy="momo")
    _order(store, cid="r-sell", strategy="revert", side="sell")
    _fill(store, "e2", cid="m-buy", quantity=10)
    _fill(store, "e1", cid="r-sell", side="sell", quantity=3)  # same time: by execution id
    _fill(store, "e1", cid="r-sell", side="sell", quantity=3)  # redelivered
    assert [tuple(r) for r in store.ledger_amounts()] == [
        (e.execution_id, e.symbol, e.signed_quantity, e.price, e.fee) for e in store.ledger()
    ]
    assert [(r.execution_id, r.signed_quantity) for r in store.ledger_amounts()] == [
        ("e1", -3.0),
        ("e2", 10.0),
    ]


def test_net_quantity_is_signed_per_strategy_and_across_strategies(store: RecordsStore) -> None:
    _order(store, cid="m-buy", strategy="momo")
    _order(store, cid="m-sell", strategy="momo", side="sell")
    _order(store, cid="r-sell", strategy="revert", side="sell")
    _fill(store, "e1", cid="m-buy", quantity=10)
    _fill(store, "e2", cid="m-sell", side="sell", quantity=3)
    _fill(store, "e3", cid="r-sell", side="sell", quantity=12)
    assert store.net_quantity("momo", "AAPL") == 7.0
    assert store.net_quantity("revert", "AAPL") == -12.0
    assert store.net_quantity(None, "AAPL") == -5.0
    assert store.net_quantity("momo", "MSFT") == 0.0
    assert store.net_quantity("nobody", "AAPL") == 0.0
    with pytest.raises(ValidationError):
        store.net_quantity(None, "not a symbol")


# ---- bus messages kept in the records -----------------------------------------------------------


def _kept_chain() -> tuple[Any, Any, Any, Any, Any]:
    """A raw signal, its modified signal, intent and risk event, and an audit entry."""
    raw = new_message(
        RawSignal(
            strategy="momo",
            symbol="AAPL",
            timeframe="1m",
            ts=T0,
            direction="long",
            strength=0.5,
            confidence=0.8,
            features={"rsi": 28.0},
            source_message_id=new_message_id(),
        ),
        producer="signal_engine",
    )
    modified = derive(
        raw,
        ModifiedSignal(
            raw_signal_id=raw.message_id,
            strategy="momo",
            symbol="AAPL",
            timeframe="1m",
            ts=T0,
            direction="long",
            raw_strength=0.5,
            adjusted_strength=0.4,
            confidence=0.8,
            modifiers=[],
        ),
        producer="signal_modifier",
    )
    intent = derive(
        modified,
        Intent(
            symbol="AAPL",
            side="buy",
            quantity=10,
            order_type="market",
            time_in_force="day",
            strategy="momo",
            reduce_only=False,
            checks_passed=["max_position"],
            signal_id=modified.message_id,
        ),
        producer="feasibility",
    )
    risk = derive(
        intent,
        RiskEvent(
            kind="limit_breach",
            severity="warning",
            scope="symbol:AAPL",
            detail="near the position limit",
            data={"limit": 0.1},
            ts=T0,
        ),
        producer="feasibility",
    )
    audit = new_message(
        Audit(
            actor="user:alice",
            action="kill_switch.clear",
            target="global",
            old_value="halted",
            new_value="running",
            reason="drill over",
        ),
        producer="notebook",
    )
    return raw, modified, intent, risk, audit


def test_signals_intents_risk_events_and_audit_are_kept_once_per_message_id(
    store: RecordsStore,
) -> None:
    raw, modified, intent, risk, audit = _kept_chain()
    for _ in range(2):  # the second round is a redelivery
        assert store.record_signal(raw) is (_ == 0)
        assert store.record_signal(modified) is (_ == 0)
        assert store.record_intent(intent) is (_ == 0)
        assert store.record_risk_event(risk) is (_ == 0)
        assert store.record_audit(audit) is (_ == 0)
    chain = raw.correlation_id
    assert [(s.message_id, s.stage) for s in store.signals(correlation_id=chain)] == [
        (raw.message_id, "raw"),
        (modified.message_id, "modified"),
    ]
    (kept,) = store.intents(correlation_id=chain)
    assert (kept.strategy, kept.quantity, kept.signal_id) == ("momo", 10.0, modified.message_id)
    assert kept.payload == intent.payload.model_dump(mode="json")
    assert kept.causation_id == modified.message_id
    assert [r.kind for r in store.risk_events(correlation_id=chain)] == ["limit_breach"]
    assert [(a.actor, a.action) for a in store.audit_trail()] == [
        ("user:alice", "kill_switch.clear")
    ]


_KEPT_TABLES = ("signals", "intents", "risk_events", "audit")


def _stored_rows(store: RecordsStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every kept message's row as the database holds it (text and numbers as stored)."""
    with store.engine.connect() as conn:
        return {
            t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY message_id"))]
            for t in _KEPT_TABLES
        }


def test_keep_messages_writes_the_rows_the_one_at_a_time_calls_write(
    store: RecordsStore,
) -> None:
    raw, modified, intent, risk, audit = _kept_chain()
    nested = new_message(
        Audit(
            actor="service:tca",
            action="signal_outcome.close",
            target="signal:x",
            old_value=[1, 2.5, None, True],
            new_value={"outcome": "gain", "pnl": {"1": 0.25, "5": -1e-7}, "note": "été\t«ok»"},
            reason="closed",
        ),
        producer="tca",
    )
    messages = [raw, modified, intent, risk, audit, nested]
    store.keep_messages(messages)
    store.keep_messages(messages)  # a redelivery adds nothing
    kept = _stored_rows(store)
    assert [len(kept[t]) for t in _KEPT_TABLES] == [2, 1, 1, 2]
    with store.engine.begin() as conn:
        for t in _KEPT_TABLES:
            conn.execute(text(f"DELETE FROM {t}"))
    assert store.record_signal(raw) and store.record_signal(modified)
    assert store.record_intent(intent) and store.record_risk_event(risk)
    assert store.record_audit(audit) and store.record_audit(nested)
    assert _stored_rows(store) == kept


def test_reads_inside_one_reading_join_its_transaction(store: RecordsStore) -> None:
    """A service reads several things before it writes in one `reading()`: the reads inside it
    join its transaction; on SQLite that is one snapshot, so a write committed meanwhile is
    seen after it only (PostgreSQL reads what is committed, statement by statement)."""
    sqlite = store.engine.dialect.name == "sqlite"
    with store.reading() as outer:
        assert store.known_orders(["ord-1"]) == set()
        _order(store, "ord-1")  # committed by a write transaction of its own
        with store.reading() as inner:
            assert inner is outer
        assert store.known_orders(["ord-1"]) == (set() if sqlite else {"ord-1"})
    assert store.known_orders(["ord-1"]) == {"ord-1"}
