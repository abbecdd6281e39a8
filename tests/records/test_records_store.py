"""RecordsStore behaviour on SQLite and PostgreSQL: idempotent writes, history, attribution."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from tradeos_lab.contracts import PositionUpdate
from tradeos_lab.errors import StoreError, ValidationError
from tradeos_lab.stores.records import (
    ConfigChange,
    Fill,
    Order,
    RecordsStore,
    SignalOutcome,
    SystemConfig,
    Trade,
)

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def _count(store: RecordsStore, model: type[Fill] | type[Order] | type[Trade]) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def _order(store: RecordsStore, cid: str = "ord-1", **extra: object) -> bool:
    return store.record_order(
        client_order_id=cid,
        symbol="AAPL",
        side="buy",
        quantity=10,
        correlation_id="corr-1",
        **extra,
    )  # type: ignore[arg-type]


def _fill(store: RecordsStore, eid: str = "exec-1", at: datetime = T0) -> bool:
    return store.record_fill(
        execution_id=eid,
        client_order_id="ord-1",
        symbol="AAPL",
        side="buy",
        quantity=10,
        price=187.25,
        filled_at=at,
        fee=0.01,
    )


def test_seeded_profiles_have_documented_limits_in_increasing_risk(store: RecordsStore) -> None:
    profiles = store.profiles()
    assert [p.name for p in profiles] == ["Conservative", "Balanced", "Aggressive"]
    for field in (
        "max_position_pct",
        "max_daily_loss_pct",
        "max_leverage",
        "risk_per_trade_pct",
        "max_open_positions",
        "max_drawdown_pct",
    ):
        values = [getattr(p, field) for p in profiles]
        assert values == sorted(values), field
        assert values[0] < values[-1], field
    confidence = [p.min_signal_confidence for p in profiles]
    assert confidence == sorted(confidence, reverse=True)
    assert store.profile("Balanced").max_leverage == 2.0
    with pytest.raises(ValidationError):
        store.profile("YOLO")


def test_seeded_config_has_hero_signals_and_thresholds(store: RecordsStore) -> None:
    assert store.get_config("hero_signals") == []
    assert store.get_config("signal_confidence_threshold") == 0.6
    assert store.get_config("active_policy_profile") == "Balanced"
    assert store.get_config("not_there", default=42) == 42


def test_order_recorded_once_per_client_order_id(store: RecordsStore) -> None:
    assert _order(store) is True
    assert _order(store) is False
    assert _count(store, Order) == 1
    store.apply_order_update(
        "ord-1", event_id="ev-1", status="filled", broker_at=T0, broker_order_id="brk-9"
    )
    with store.session() as s:
        order = s.scalars(select(Order)).one()
        assert (order.status, order.broker_order_id) == ("filled", "brk-9")
        assert order.filled_quantity == order.quantity == 10
        assert order.updated_at.tzinfo is not None


def test_duplicate_fill_by_execution_id_is_not_duplicated(store: RecordsStore) -> None:
    _order(store)
    assert _fill(store) is True
    assert _fill(store) is False
    # A broker re-reporting the execution with another timestamp is still the same execution.
    assert _fill(store, at=T0 + timedelta(seconds=3)) is False
    assert _fill(store, eid="exec-2") is True
    assert _count(store, Fill) == 2


def test_fill_for_an_unknown_order_is_refused_by_the_foreign_key(store: RecordsStore) -> None:
    with pytest.raises(StoreError, match="constraint"):
        _fill(store)
    assert _count(store, Fill) == 0


def test_trade_recorded_once_per_execution(store: RecordsStore) -> None:
    _order(store)
    kwargs = {
        "execution_id": "exec-1",
        "client_order_id": "ord-1",
        "correlation_id": "corr-1",
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 10,
        "price": 187.25,
        "executed_at": T0,
    }
    assert store.record_trade(**kwargs) is True  # type: ignore[arg-type]
    assert store.record_trade(**kwargs) is False  # type: ignore[arg-type]
    assert _count(store, Trade) == 1


def test_attribution_chain_queryable_from_any_link(store: RecordsStore) -> None:
    _order(store, intent_id="intent-1")
    _fill(store)
    store.record_trade(
        execution_id="exec-1",
        client_order_id="ord-1",
        correlation_id="corr-1",
        market_data_message_id="1709303400000-0",
        raw_signal_id="sig-raw-1",
        modified_signal_id="sig-mod-1",
        intent_id="intent-1",
        strategy="rsi_reversion",
        symbol="AAPL",
        side="buy",
        quantity=10,
        price=187.25,
        executed_at=T0,
    )
    store.record_signal_outcome(
        signal_id="sig-raw-1",
        signal_at=T0 - timedelta(seconds=2),
        symbol="AAPL",
        outcome="win",
        slippage_bps=1.5,
        pnl=42.0,
        holding_seconds=3600,
        execution_id="exec-1",
        closed_at=T0 + timedelta(hours=1),
    )
    found = [
        store.attribution(correlation_id="corr-1"),
        store.attribution(signal_id="sig-raw-1"),
        store.attribution(signal_id="sig-mod-1"),
        store.attribution(execution_id="exec-1"),
    ]
    for chains in found:
        assert len(chains) == 1
        chain = chains[0]
        trade = chain.trade
        assert (
            trade.market_data_message_id,
            trade.raw_signal_id,
            trade.modified_signal_id,
            trade.intent_id,
            chain.order.client_order_id,
            chain.fill.execution_id if chain.fill else None,
            trade.correlation_id,
        ) == (
            "1709303400000-0",
            "sig-raw-1",
            "sig-mod-1",
            "intent-1",
            "ord-1",
            "exec-1",
            "corr-1",
        )
        assert chain.order.intent_id == trade.intent_id
        assert chain.fill is not None
        assert chain.fill.price == 187.25
        assert chain.outcome is not None
        assert chain.outcome.pnl == 42.0
        assert trade.executed_at == T0
    assert store.attribution(correlation_id="other") == []
    with pytest.raises(ValidationError):
        store.attribution(correlation_id="corr-1", execution_id="exec-1")


def test_config_change_history_kept_with_who_when_old_new_and_why(store: RecordsStore) -> None:
    assert store.set_config(
        "hero_signals", ["rsi_14", "macd"], changed_by="agent", reason="weekly re-optimisation"
    )
    assert store.set_config("hero_signals", ["macd"], changed_by="alice", reason="rsi decayed")
    assert not store.set_config("hero_signals", ["macd"], changed_by="bob", reason="no change")
    assert store.get_config("hero_signals") == ["macd"]
    history = store.config_history("hero_signals")
    assert [(h.old_value, h.new_value, h.changed_by) for h in history] == [
        (None, [], "migration 0001"),
        ([], ["rsi_14", "macd"], "agent"),
        (["rsi_14", "macd"], ["macd"], "alice"),
    ]
    assert history[-1].reason == "rsi decayed"
    assert all(h.changed_at.tzinfo is not None for h in history)
    assert history[0].changed_at <= history[1].changed_at <= history[2].changed_at


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("Hero Signals", 1, "bad key"),
        ("x'; DROP TABLE system_config;--", 1, "bad key"),
        ("threshold", math.nan, "NaN is not JSON"),
        ("threshold", object(), "not JSON"),
        ("threshold", None, "null"),
        ("threshold", 0.7, "   "),
    ],
)
def test_bad_config_changes_are_refused_and_change_nothing(
    store: RecordsStore, key: str, value: object, reason: str
) -> None:
    def state() -> list[tuple[object, ...]]:
        with store.session() as s:
            config = s.execute(select(SystemConfig.key, SystemConfig.value)).all()
            history = s.execute(select(ConfigChange.id, ConfigChange.new_value)).all()
        return sorted(tuple(r) for r in config) + sorted(tuple(r) for r in history)

    before = state()
    with pytest.raises(ValidationError):
        store.set_config(key, value, changed_by="alice", reason=reason)
    assert state() == before


def test_backtest_run_lifecycle(store: RecordsStore) -> None:
    run_id = store.start_backtest(
        strategy="rsi_reversion",
        parameters={"window": 14, "entry": 30},
        data_start=T0 - timedelta(days=365),
        data_end=T0,
        data_hash="sha256:abc123",
        code_version="0.1.0+g93784b2",
    )
    run = store.backtest(run_id)
    assert (run.state, run.results, run.finished_at) == ("running", None, None)
    assert run.parameters == {"window": 14, "entry": 30}
    done = store.finish_backtest(run_id, results={"sharpe": 1.4, "trades": 212})
    assert done.state == "succeeded"
    assert done.results == {"sharpe": 1.4, "trades": 212}
    assert done.finished_at is not None
    assert run.started_at is not None
    assert done.finished_at >= run.started_at
    with pytest.raises(ValidationError, match="already succeeded"):
        store.finish_backtest(run_id, error="late")

    failed = store.start_backtest(
        strategy="rsi_reversion",
        parameters={},
        data_start=T0 - timedelta(days=1),
        data_end=T0,
        data_hash="sha256:def",
        code_version="0.1.0",
    )
    assert store.finish_backtest(failed, error="no data").state == "failed"
    with pytest.raises(ValidationError, match="before"):
        store.start_backtest(
            strategy="x",
            parameters={},
            data_start=T0,
            data_end=T0,
            data_hash="h",
            code_version="v",
        )


def _position(
    symbol: str, quantity: float, avg_price: float, mark_price: float | None = None
) -> PositionUpdate:
    mark = avg_price if mark_price is None else mark_price
    return PositionUpdate(
        symbol=symbol,
        quantity=quantity,
        avg_price=avg_price,
        mark_price=mark_price,
        market_value=quantity * mark,
        unrealized_pnl=quantity * (mark - avg_price),
        realized_pnl=0.0,
        ts=T0,
    )


def test_position_snapshots_keep_history_and_latest_wins(store: RecordsStore) -> None:
    first = [_position("AAPL", 10, 187.0, 188.0), _position("MSFT", 5, 400.0)]
    second = [_position("AAPL", 15, 187.5, 190.0)]
    assert store.snapshot_positions(first, at=T0) == 2
    assert store.snapshot_positions(second, at=T0 + timedelta(minutes=1)) == 1
    # Re-writing the same instant replaces it rather than adding rows.
    store.snapshot_positions([_position("AAPL", 20, 187.5)], at=T0 + timedelta(minutes=1))
    latest = store.latest_positions()
    assert [(p.symbol, p.quantity) for p in latest] == [("AAPL", 20.0)]
    assert latest[0].snapshot_at == T0 + timedelta(minutes=1)
    assert store.latest_positions("other") == []


def test_pnl_history_sums_the_whole_book_per_snapshot_oldest_first(store: RecordsStore) -> None:
    closed = _position("MSFT", 0, 0.0).model_copy(update={"realized_pnl": -12.5})
    store.snapshot_positions([_position("AAPL", 10, 187.0, 188.0), closed], at=T0)
    later = [_position("AAPL", 10, 187.0, 186.0), closed]
    store.snapshot_positions(later, at=T0 + timedelta(minutes=1))
    store.snapshot_positions([_position("AAPL", 1, 1.0, 2.0)], at=T0, account="other")
    assert store.pnl_history() == [
        (T0, pytest.approx(10.0 - 12.5)),
        (T0 + timedelta(minutes=1), pytest.approx(-10.0 - 12.5)),
    ]
    assert store.pnl_history(limit=1) == [(T0 + timedelta(minutes=1), pytest.approx(-22.5))]
    assert store.pnl_history("nobody") == []
    with pytest.raises(ValidationError, match="limit"):
        store.pnl_history(limit=0)


def test_signal_outcome_revised_not_duplicated(store: RecordsStore) -> None:
    common = {"signal_id": "sig-1", "signal_at": T0, "symbol": "BTC-USD"}
    store.record_signal_outcome(**common, outcome="unfilled")  # type: ignore[arg-type]
    store.record_signal_outcome(**common, outcome="loss", pnl=-3.0, slippage_bps=4.2)  # type: ignore[arg-type]
    chains = store.attribution(signal_id="sig-1")
    assert chains == []  # no trade, but the outcome itself is stored once:
    with store.session() as s:
        rows = s.scalars(select(SignalOutcome)).all()
    assert [(r.outcome, r.pnl, r.slippage_bps) for r in rows] == [("loss", -3.0, 4.2)]


def _cost(eid: str, price: float, *, signal_id: str = "sig-1") -> dict[str, object]:
    return {
        "execution_id": eid,
        "client_order_id": "ord-1",
        "broker": "paper",
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 5,
        "price": price,
        "fee": 0.01,
        "filled_at": T0,
        "signal_id": signal_id,
        "arrival_price": 100.0,
        "slippage_bps": (price - 100.0) / 100.0 * 1e4,
    }


def test_a_batch_of_fill_costs_is_kept_once_per_execution(store: RecordsStore) -> None:
    store.record_fill_costs([_cost("exec-1", 101.0), _cost("exec-2", 102.0)])
    store.record_fill_costs([_cost("exec-2", 999.0), _cost("exec-3", 103.0, signal_id="sig-2")])
    kept = store.fill_costs_of(client_order_ids=["ord-1"])
    assert [(c.execution_id, c.price) for c in kept] == [
        ("exec-1", 101.0),
        ("exec-2", 102.0),  # the first write stands
        ("exec-3", 103.0),
    ]
    assert [c.execution_id for c in store.fill_costs_of(signal_ids=["sig-2", "sig-9"])] == [
        "exec-3"
    ]
    with pytest.raises(ValidationError):
        store.record_fill_costs([_cost("exec-4", 104.0), _cost("exec-5", -1.0)])
    assert len(store.fill_costs()) == 3  # a bad row keeps none of its batch


def test_fill_amounts_come_for_any_of_the_orders_or_signals_in_fill_order(
    store: RecordsStore,
) -> None:
    later = {**_cost("exec-0", 104.0, signal_id="sig-3"), "filled_at": T0 + timedelta(seconds=1)}
    store.record_fill_costs(
        [
            later,
            _cost("exec-1", 101.0),
            {**_cost("exec-2", 102.0, signal_id="sig-2"), "client_order_id": "ord-2"},
            {**_cost("exec-3", 103.0, signal_id="sig-9"), "client_order_id": "ord-9"},
        ]
    )
    found = store.fill_amounts_of(client_order_ids=["ord-1"], signal_ids=["sig-2"])
    assert [(f.execution_id, f.client_order_id, f.signal_id, f.price) for f in found] == [
        ("exec-1", "ord-1", "sig-1", 101.0),
        ("exec-2", "ord-2", "sig-2", 102.0),
        ("exec-0", "ord-1", "sig-3", 104.0),  # filled last
    ]
    assert [f.execution_id for f in store.fill_amounts_of(signal_ids=["sig-9"])] == ["exec-3"]
    assert store.fill_amounts_of() == []


def test_a_batch_of_horizon_closes_leaves_what_is_no_longer_open(store: RecordsStore) -> None:
    opening = {
        "horizons": (5, 15),
        "strategy": "sma_cross",
        "symbol": "AAPL",
        "timeframe": "1m",
        "signal_at": T0,
        "strength": 0.5,
        "side": "buy",
        "quantity": 2.0,
        "avg_price": 100.0,
        "fees": 0.2,
        "arrival_price": 100.0,
    }
    assert store.open_signals([{**opening, "signal_id": s} for s in ("sig-1", "sig-2")]) == 4
    store.expire_signal_horizons("sig-2")
    close = {"exit_at": T0 + timedelta(minutes=5), "forward_return": 0.01, "pnl": 1.8}
    store.close_signal_horizons(
        [
            {**close, "signal_id": "sig-1", "horizon_bars": 5, "exit_price": 101.0},
            {**close, "signal_id": "sig-2", "horizon_bars": 5, "exit_price": 101.0},
        ]
    )
    store.close_signal_horizons(  # a second close of a done horizon changes nothing
        [{**close, "signal_id": "sig-1", "horizon_bars": 5, "exit_price": 50.0}]
    )
    rows = store.signal_horizons(signal_ids=["sig-1", "sig-2"])
    assert [(r.signal_id, r.horizon_bars, r.status, r.exit_price) for r in rows] == [
        ("sig-1", 5, "done", 101.0),
        ("sig-1", 15, "open", None),
        ("sig-2", 5, "expired", None),
        ("sig-2", 15, "expired", None),
    ]
    assert store.signals_to_conclude() == ["sig-2"]
    # sig-1 has a horizon open: all of its horizons, the closed one too; sig-2 none
    assert [(r.signal_id, r.horizon_bars, r.status) for r in store.horizons_of_open_signals()] == [
        ("sig-1", 5, "done"),
        ("sig-1", 15, "open"),
    ]


def test_bulk_writes_store_what_the_one_row_writes_store(store: RecordsStore) -> None:
    """The bulk writes (rows sent to the driver as the column types make them) keep the same
    values as the one-row writes that go through SQLAlchemy's own statement execution."""
    at = datetime(2024, 3, 1, 9, 30, 0, tzinfo=timezone(timedelta(hours=-5)))  # not UTC
    cost = {**_cost("exec-1", 101.0), "filled_at": at, "arrival_at": at, "fee": 0}
    assert store.record_fill_cost(**cost)  # type: ignore[arg-type]
    store.record_fill_costs([{**cost, "execution_id": "exec-2"}])
    one, bulk = store.fill_costs()
    assert one._asdict() | {"execution_id": "x", "recorded_at": None} == bulk._asdict() | {
        "execution_id": "x",
        "recorded_at": None,
    }
    assert bulk.filled_at == at and bulk.filled_at.tzinfo == UTC and bulk.fee == 0.0
    opening = {
        "horizons": (5,),
        "strategy": "sma_cross",
        "symbol": "AAPL",
        "timeframe": "1m",
        "signal_at": at,
        "strength": 1,
        "side": "sell",
        "quantity": 2.0,
        "avg_price": 100.0,
        "fees": 0.2,
        "arrival_price": 100.0,
    }
    store.open_signals([{**opening, "signal_id": s} for s in ("sig-1", "sig-2")])
    close = {"exit_at": at, "exit_price": 99.5, "forward_return": -0.005, "pnl": 0.8}
    assert store.close_signal_horizon("sig-1", 5, **close)
    store.close_signal_horizons([{**close, "signal_id": "sig-2", "horizon_bars": 5}])
    one, bulk = store.signal_horizons()
    ignored = {"signal_id": "x", "opened_at": None, "closed_at": None}
    assert one._asdict() | ignored == bulk._asdict() | ignored
    assert (bulk.status, bulk.exit_at, bulk.signal_at, bulk.strength) == ("done", at, at, 1.0)
    with pytest.raises(ValidationError, match="no time zone"):
        store.record_fill_costs([{**cost, "filled_at": datetime(2024, 3, 1)}])


def test_the_trade_chains_of_many_executions_come_in_one_call(store: RecordsStore) -> None:
    _order(store)
    for eid in ("exec-1", "exec-2"):
        _fill(store, eid)
        store.record_trade(
            execution_id=eid,
            client_order_id="ord-1",
            correlation_id="corr-1",
            symbol="AAPL",
            side="buy",
            quantity=10,
            price=187.25,
            executed_at=T0,
        )
    plain = store.trade_chains_of(["exec-1", "exec-2", "exec-9"])
    assert sorted(plain) == ["exec-1", "exec-2"]
    row = plain["exec-2"]
    (one,) = store.attribution(execution_id="exec-2")  # the same trade and order, as objects
    assert (row.trade.client_order_id, row.order.quantity) == (
        one.trade.client_order_id,
        one.order.quantity,
    )
    assert (row.trade.execution_id, row.trade.client_order_id, row.trade.price) == (
        "exec-2",
        "ord-1",
        187.25,
    )
    assert (row.order.client_order_id, row.order.side, row.order.quantity) == ("ord-1", "buy", 10)
    assert store.trade_chains_of([]) == {}


@pytest.mark.parametrize(
    "bad",
    [
        {"symbol": "AAPL'; DROP TABLE orders;--"},
        {"symbol": "АAPL"},  # Cyrillic A
        {"symbol": ""},
        {"side": "hold"},
        {"quantity": -1},
        {"quantity": math.nan},
        {"client_order_id": ""},
        {"client_order_id": "x" * 10_000},
        {"at": datetime(2024, 1, 1)},  # naive: which zone?
    ],
)
def test_bad_orders_are_refused_and_tables_unchanged(
    store: RecordsStore, bad: dict[str, object]
) -> None:
    kwargs: dict[str, object] = {
        "client_order_id": "ord-x",
        "symbol": "AAPL",
        "side": "buy",
        "quantity": 1,
        **bad,
    }
    with pytest.raises(ValidationError):
        store.record_order(**kwargs)  # type: ignore[arg-type]
    assert _count(store, Order) == 0
