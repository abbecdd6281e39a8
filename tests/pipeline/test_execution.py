"""Execution on the machine's Redis and PostgreSQL: an intent becomes one order and its fills,
once however often it is delivered, every fill traceable to its bar; a HALTED kill switch stops
new orders; the records come before any message."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy

import tradeos_lab as tl
from tradeos_lab.contracts import (
    AuditMessage,
    Bar,
    FillMessage,
    Intent,
    Message,
    ModifiedSignal,
    OrderMessage,
    RawSignal,
    RiskEventMessage,
    derive,
    new_message,
)
from tradeos_lab.errors import DependencyUnavailable
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.execution import (
    QUIET_BARS_LINGER_S,
    Execution,
    client_order_id_for,
)
from tradeos_lab.settings import Settings, SharedRedisServerWarning

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def _bar(lab: Lab, minute: int, close: float = 100.0, volume: float = 1_000.0) -> Message:
    """A 1m BTC-USD bar in the cache (as Ingestion leaves it) and its market_data message."""
    ts = T0 + timedelta(minutes=minute)
    values = {"open": close, "high": close + 1, "low": close - 1, "close": close, "volume": volume}
    lab.cache.append_bar("BTC-USD", "1m", {**values, "ts": ts})
    bar = Bar(symbol="BTC-USD", timeframe="1m", ts=ts, source="synthetic", **values)  # type: ignore[arg-type]
    return new_message(bar, producer="ingestion")


def _intent(lab: Lab, bar: Message, quantity: float = 2.0, **extra: object) -> Message:
    """The chain bar -> raw signal -> modified signal (kept in the records) -> intent."""
    raw = derive(
        bar,
        RawSignal(
            strategy="sma_cross",
            symbol="BTC-USD",
            timeframe="1m",
            ts=T0,
            direction="long",
            strength=0.5,
            confidence=0.8,
            features={"sma_fast": 101.0},
            source_message_id=bar.message_id,
        ),
        producer="signal_engine",
    )
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
            adjusted_strength=0.5,
            confidence=0.8,
            modifiers=[],
        ),
        producer="signal_modifier",
    )
    lab.records.record_signal(raw)  # type: ignore[arg-type]
    lab.records.record_signal(modified)  # type: ignore[arg-type]
    values: dict[str, object] = {
        "symbol": "BTC-USD",
        "side": "buy",
        "quantity": quantity,
        "order_type": "market",
        "time_in_force": "gtc",
        "strategy": "sma_cross",
        "reduce_only": False,
        "checks_passed": ["kill_switch"],
        "signal_id": modified.message_id,
        **extra,
    }
    return derive(modified, Intent(**values), producer="feasibility")  # type: ignore[arg-type]


@pytest.fixture
def execution(pipeline_lab: Lab, pipeline_settings: Settings) -> Execution:
    return Execution(ServiceContext(lab=pipeline_lab, settings=pipeline_settings, instance="t"))


def _of(kind: type[Message], out: list[Message] | tuple[Message, ...]) -> list[Message]:
    return [m for m in out if isinstance(m, kind)]


def test_intent_becomes_exactly_one_order_and_its_fills(
    execution: Execution, pipeline_lab: Lab
) -> None:
    intent = _intent(pipeline_lab, _bar(pipeline_lab, 0))
    out = list(execution.handle(intent))
    (order,) = _of(OrderMessage, out)
    (fill,) = _of(FillMessage, out)
    assert len(_of(AuditMessage, out)) == 1
    cid = client_order_id_for(intent.message_id)
    assert order.payload.client_order_id == cid == fill.payload.client_order_id  # type: ignore[attr-defined]
    assert order.payload.status.value == "filled"  # type: ignore[attr-defined]
    assert order.payload.intent_id == intent.message_id  # type: ignore[attr-defined]
    assert len(cid) <= 48
    recorded = pipeline_lab.records.order(cid)
    assert (recorded.status, recorded.filled_quantity) == ("filled", 2.0)
    assert [f.execution_id for f in pipeline_lab.records.fills(cid)] == [fill.payload.execution_id]  # type: ignore[attr-defined]
    assert pipeline_lab.records.net_quantity("sma_cross", "BTC-USD") == 2.0


def test_same_intent_delivered_twice_places_one_order_and_records_one_trade(
    execution: Execution, pipeline_lab: Lab
) -> None:
    intent = _intent(pipeline_lab, _bar(pipeline_lab, 0))
    first = execution.handle(intent)
    _bar(pipeline_lab, 1, close=150.0)  # the market moved: a second order would fill elsewhere
    again = execution.handle(intent)
    assert [m.payload for m in again if not isinstance(m, AuditMessage)] == [
        m.payload for m in first if not isinstance(m, AuditMessage)
    ]
    trades = pipeline_lab.records.attribution(correlation_id=intent.correlation_id)
    assert len(trades) == 1
    assert len(pipeline_lab.records.open_orders()) == 0
    assert pipeline_lab.records.net_quantity(None, "BTC-USD") == 2.0


def test_every_fill_carries_its_whole_attribution_chain(
    execution: Execution, pipeline_lab: Lab
) -> None:
    bar = _bar(pipeline_lab, 0)
    intent = _intent(pipeline_lab, bar)
    (fill,) = _of(FillMessage, execution.handle(intent))
    assert fill.causation_id == intent.message_id
    assert fill.correlation_id == bar.message_id
    (kept,) = pipeline_lab.records.attribution(execution_id=fill.payload.execution_id)  # type: ignore[attr-defined]
    modified = pipeline_lab.records.signal(intent.payload.signal_id)  # type: ignore[attr-defined,arg-type]
    assert modified is not None
    trade = kept.trade
    assert trade.market_data_message_id == bar.message_id
    assert trade.raw_signal_id == modified.causation_id == modified.payload["raw_signal_id"]
    assert trade.modified_signal_id == modified.message_id
    assert trade.intent_id == intent.message_id == kept.order.intent_id
    assert kept.fill is not None and kept.fill.price == fill.payload.price  # type: ignore[attr-defined]


def test_later_bars_fill_the_rest_and_those_fills_stay_in_the_intents_chain(
    execution: Execution, pipeline_lab: Lab
) -> None:
    intent = _intent(pipeline_lab, _bar(pipeline_lab, 0, volume=1.0), quantity=2.5)
    (order,) = _of(OrderMessage, execution.handle(intent))
    assert order.payload.status.value == "partially_filled"  # type: ignore[attr-defined]
    later = list(execution.handle(_bar(pipeline_lab, 1, volume=1.0)))
    last = list(execution.handle(_bar(pipeline_lab, 2, volume=5.0)))
    fills = _of(FillMessage, later + last)
    assert [f.payload.quantity for f in fills] == [1.0, 0.5]  # type: ignore[attr-defined]
    assert {(f.causation_id, f.correlation_id) for f in fills} == {
        (intent.message_id, intent.correlation_id)
    }
    assert _of(OrderMessage, last)[0].payload.status.value == "filled"  # type: ignore[attr-defined]
    assert len(pipeline_lab.records.attribution(correlation_id=intent.correlation_id)) == 3


def test_halted_kill_switch_submits_nothing_and_says_why(
    execution: Execution, pipeline_lab: Lab
) -> None:
    intent = _intent(pipeline_lab, _bar(pipeline_lab, 0))
    pipeline_lab.kill_switches.engage("global", "HALTED", actor="user:test", reason="drill")
    out = list(execution.handle(intent))
    (order,) = _of(OrderMessage, out)
    assert order.payload.status.value == "rejected"  # type: ignore[attr-defined]
    assert "kill switch" in order.payload.reason  # type: ignore[attr-defined]
    (event,) = _of(RiskEventMessage, out)
    assert event.payload.kind.value == "kill_switch"  # type: ignore[attr-defined]
    assert _of(FillMessage, out) == []
    cid = client_order_id_for(intent.message_id)
    assert pipeline_lab.records.fills(cid) == []
    assert pipeline_lab.records.order(cid).broker_order_id is None  # never reached the broker
    # Cleared later, the same delivery stays refused: it was decided, not deferred.
    pipeline_lab.kill_switches.clear("global", actor="user:test", reason="drill over")
    assert _of(FillMessage, execution.handle(intent)) == []


def test_cancel_goes_out_while_halted(execution: Execution, pipeline_lab: Lab) -> None:
    limit = {"order_type": "limit", "limit_price": 50.0}
    intent = _intent(pipeline_lab, _bar(pipeline_lab, 0), **limit)
    execution.handle(intent)
    pipeline_lab.kill_switches.engage("global", "HALTED", actor="user:test", reason="drill")
    canceled = execution.broker.cancel(client_order_id_for(intent.message_id))
    assert canceled.status.value == "canceled"


def test_records_down_is_a_transient_error_before_anything_is_published(
    pipeline_lab: Lab, pipeline_settings: Settings
) -> None:
    intent = _intent(pipeline_lab, _bar(pipeline_lab, 0))
    nothing_listens = "postgresql://postgres@127.0.0.1:9/records"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        down = Settings.model_validate(
            {**pipeline_settings.model_dump(), "records_url": nothing_listens}
        )
        lab = tl.connect(down, start=False)
    try:
        service = Execution(ServiceContext(lab=lab, settings=down, instance="t"))
        with pytest.raises(DependencyUnavailable):
            service.handle(intent)
    finally:
        lab.close()


def test_through_the_runner_an_intent_on_the_bus_comes_out_as_an_order_and_fills(
    pipeline_lab: Lab, pipeline_settings: Settings
) -> None:
    from tradeos_lab.pipeline.runner import ServiceRunner

    intent = _intent(pipeline_lab, _bar(pipeline_lab, 0))
    pipeline_lab.bus.publish(Stream.INTENTS, intent)
    ctx = ServiceContext(lab=pipeline_lab, settings=pipeline_settings, instance="t")
    runner = ServiceRunner(Execution, ctx)
    runner.drain()
    runner.drain()  # nothing left: the intent was acked with its outputs
    bus = pipeline_lab.bus.redis
    assert bus.xlen(pipeline_lab.keys.stream(Stream.ORDERS)) == 1
    assert bus.xlen(pipeline_lab.keys.stream(Stream.FILLS_RAW)) == 1
    assert len(pipeline_lab.records.attribution(correlation_id=intent.correlation_id)) == 1


def test_each_broker_answer_counts_a_success_on_the_brokers_circuit_breaker(
    execution: Execution, pipeline_lab: Lab
) -> None:
    from tradeos_lab.pipeline.services.feasibility import BROKER_DEPENDENCY

    breaker = pipeline_lab.flags.circuit_breaker(BROKER_DEPENDENCY)
    for _ in range(4):
        breaker.record_failure()
    execution.handle(_intent(pipeline_lab, _bar(pipeline_lab, 0)))
    assert breaker.status().failures == 0


def test_reducing_kill_switch_lets_only_exposure_reducing_orders_through(
    execution: Execution, pipeline_lab: Lab
) -> None:
    bar = _bar(pipeline_lab, 0)
    execution.handle(_intent(pipeline_lab, bar, quantity=2.0))
    pipeline_lab.kill_switches.engage(
        "strategy", "REDUCING", target="sma_cross", actor="user:test", reason="drill"
    )
    adding = _of(OrderMessage, execution.handle(_intent(pipeline_lab, bar, quantity=1.0)))
    reducing = _of(OrderMessage, execution.handle(_intent(pipeline_lab, bar, side="sell")))
    assert [m.payload.status.value for m in (*adding, *reducing)] == ["rejected", "filled"]  # type: ignore[attr-defined]
    assert pipeline_lab.records.net_quantity("sma_cross", "BTC-USD") == 0.0


def test_bars_of_a_symbol_without_open_orders_do_not_ask_the_records_each_time(
    execution: Execution, pipeline_lab: Lab
) -> None:
    from sqlalchemy import event

    statements: list[str] = []
    execution.handle(_bar(pipeline_lab, 0))  # warm: the records say no open order

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(pipeline_lab.records.engine, "before_cursor_execute", count)
    execution.handle(_bar(pipeline_lab, 1))
    assert statements == []
    # An order of this process that stays open is worked by the very next bar.
    limit = {"order_type": "limit", "limit_price": 95.0}
    intent = _intent(pipeline_lab, _bar(pipeline_lab, 2), **limit)
    execution.handle(intent)
    fills = _of(FillMessage, execution.handle(_bar(pipeline_lab, 3, close=94.0)))
    assert [f.causation_id for f in fills] == [intent.message_id]


def test_a_batch_of_bars_works_open_orders_as_the_bars_one_at_a_time(
    execution: Execution, pipeline_lab: Lab
) -> None:
    limit = {"order_type": "limit", "limit_price": 95.0}
    intent = _intent(pipeline_lab, _bar(pipeline_lab, 0), quantity=2.0, **limit)
    execution.handle(intent)
    bars = [_bar(pipeline_lab, 1, close=94.0, volume=1.0), _bar(pipeline_lab, 2, close=94.0)]
    first, second = execution.handle_batch(bars)
    assert [m.payload.quantity for m in _of(FillMessage, list(first))] == [1.0]  # type: ignore[attr-defined]
    assert [m.payload.quantity for m in _of(FillMessage, list(second))] == [1.0]  # type: ignore[attr-defined]
    (order,) = _of(OrderMessage, list(second))
    assert order.payload.status.value == "filled"  # type: ignore[attr-defined]
    assert [m.causation_id for m in (*first, *second)] == [intent.message_id] * (
        len(first) + len(second)
    )


def test_quotes_on_market_data_are_passed_over_and_other_schemas_refused(
    execution: Execution,
) -> None:
    from tradeos_lab.contracts import Audit, Quote
    from tradeos_lab.errors import ContractError

    quote = Quote(
        symbol="BTC-USD", ts=T0, bid_price=99, bid_size=1, ask_price=101, ask_size=1, source="t"
    )
    assert execution.handle(new_message(quote, producer="ingestion")) == []
    audit = Audit(
        actor="user:t", action="x", target="y", old_value=None, new_value=None, reason="z"
    )
    with pytest.raises(ContractError, match="intents and bars"):
        execution.handle(new_message(audit, producer="t"))


def test_a_stop_intent_is_rejected_by_the_paper_broker_with_a_reason_on_risk_events(
    execution: Execution, pipeline_lab: Lab
) -> None:
    intent = _intent(pipeline_lab, _bar(pipeline_lab, 0), order_type="stop", stop_price=90.0)
    out = execution.handle(intent)
    (order,) = _of(OrderMessage, out)
    assert order.payload.status.value == "rejected"  # type: ignore[attr-defined]
    assert order.payload.stop_price == 90.0  # type: ignore[attr-defined]
    (event,) = _of(RiskEventMessage, out)
    assert event.payload.kind.value == "execution_failure"  # type: ignore[attr-defined]


def test_a_restarted_execution_on_the_paper_broker_reads_no_orders_back_before_its_first_intent(
    execution: Execution, pipeline_lab: Lab, pipeline_settings: Settings
) -> None:
    """The paper broker's state is the records: nothing to reconcile, at start or on a timer,
    so a restart costs nothing however many orders the day has seen."""
    for minute in range(3):
        execution.handle(_intent(pipeline_lab, _bar(pipeline_lab, minute), quantity=1.0))
    restarted = Execution(ServiceContext(pipeline_lab, pipeline_settings, instance="t2"))
    assert restarted.timers() == ()
    statements: list[str] = []
    engine = pipeline_lab.records.engine
    listen = lambda *args: statements.append(args[2])  # noqa: E731 (conn, cursor, statement, ...)
    sqlalchemy.event.listen(engine, "before_cursor_execute", listen)
    try:
        out = restarted.handle(_intent(pipeline_lab, _bar(pipeline_lab, 3), quantity=1.0))
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", listen)
    assert len(_of(FillMessage, list(out))) == 1
    orders_read = [
        s for s in statements if s.lstrip().upper().startswith("SELECT") and "orders" in s
    ]
    assert len(orders_read) <= 3, f"a reconciliation read the day's orders back: {orders_read}"


def test_bars_are_read_together_while_no_order_works_and_as_they_come_while_one_does(
    execution: Execution, pipeline_lab: Lab
) -> None:
    assert execution.linger_s(Stream.MARKET_DATA) == QUIET_BARS_LINGER_S
    assert execution.linger_s(Stream.INTENTS) == 0.0  # an intent never waits
    limit = {"order_type": "limit", "limit_price": 95.0}
    execution.handle(_intent(pipeline_lab, _bar(pipeline_lab, 0), **limit))  # stays open
    assert execution.linger_s(Stream.MARKET_DATA) == 0.0
    fills = _of(FillMessage, execution.handle(_bar(pipeline_lab, 1, close=94.0)))
    assert fills and execution.linger_s(Stream.MARKET_DATA) == 0.0  # as the records last showed
    execution.handle(_bar(pipeline_lab, 2, close=94.0))  # the records show none working now
    assert execution.linger_s(Stream.MARKET_DATA) == QUIET_BARS_LINGER_S
