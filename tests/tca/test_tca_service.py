"""The tca service on the machine's Redis with the records on PostgreSQL and on SQLite: each fill
measured once against the close of the bar behind it, its order's shortfall, its signal's
horizons closed as their bars come, the strategy's win rate and IC in the cache, shadow fills
for a venue's fills, and a clear error for nonsense."""

from __future__ import annotations

import time
import warnings
from datetime import UTC, datetime, timedelta

import pytest

import tradeos_lab as tl
from tradeos_lab.contracts import (
    AuditMessage,
    Bar,
    Fill,
    FillMessage,
    Intent,
    Message,
    ModifiedSignal,
    RawSignal,
    derive,
    new_message,
)
from tradeos_lab.errors import ContractError, ValidationError
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.registry import PIPELINE_ORDER, service_class
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services import tca as tca_service
from tradeos_lab.pipeline.services.execution import Execution
from tradeos_lab.pipeline.services.tca import HORIZONS_BARS, TcaMonitor
from tradeos_lab.settings import PIPELINE_SERVICES, SharedRedisServerWarning
from tradeos_lab.stores.records import SignalOutcome

#: A recent minute (inside the lake's retention), so bars may go to the lake too.
T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
FEE = 10 / 10_000  # the paper broker's default fee and slippage, in fractions
SLIP = 5 / 10_000


@pytest.fixture
def lab(armed_lab: Lab) -> Lab:
    """The shared armed lab (records on PostgreSQL and on SQLite)."""
    return armed_lab


@pytest.fixture
def ctx(lab: Lab) -> ServiceContext:
    return ServiceContext(lab=lab, settings=lab.settings, instance="t")


def _bar(lab: Lab, minute: int, close: float, *, volume: float = 1_000.0) -> Message:
    """A 1m AAPL bar in the cache, as Ingestion leaves it, and its market_data message."""
    ts = T0 + timedelta(minutes=minute)
    values = {"open": close, "high": close + 1, "low": close - 1, "close": close, "volume": volume}
    lab.cache.append_bar("AAPL", "1m", {**values, "ts": ts})
    lab.cache.set_price("AAPL", close)
    bar = Bar(symbol="AAPL", timeframe="1m", ts=ts, source="synthetic", **values)  # type: ignore[arg-type]
    return new_message(bar, producer="ingestion")


def _bars(lab: Lab, closes: dict[int, float]) -> None:
    for minute, close in sorted(closes.items()):
        _bar(lab, minute, close)


def _signal_intent(
    lab: Lab, bar: Message, *, strength: float = 0.5, side: str = "buy", quantity: float = 2.0
) -> Message:
    """The chain bar -> raw signal -> modified signal (kept in the records) -> intent."""
    direction = "long" if strength > 0 else "short"
    common = {"strategy": "sma_cross", "symbol": "AAPL", "timeframe": "1m", "ts": bar.payload.ts}  # type: ignore[attr-defined]
    raw = derive(
        bar,
        RawSignal(
            **common,  # type: ignore[arg-type]
            direction=direction,  # type: ignore[arg-type]
            strength=strength,
            confidence=0.8,
            features={},
            source_message_id=bar.message_id,
        ),
        producer="signal_engine",
    )
    modified = derive(
        raw,
        ModifiedSignal(
            **common,  # type: ignore[arg-type]
            raw_signal_id=raw.message_id,
            direction=direction,  # type: ignore[arg-type]
            raw_strength=strength,
            adjusted_strength=strength,
            confidence=0.8,
            modifiers=[],
        ),
        producer="signal_modifier",
    )
    lab.records.record_signal(modified)  # type: ignore[arg-type]
    intent = Intent(
        symbol="AAPL",
        side=side,  # type: ignore[arg-type]
        quantity=quantity,
        order_type="market",  # type: ignore[arg-type]
        time_in_force="gtc",  # type: ignore[arg-type]
        strategy="sma_cross",
        reduce_only=False,
        checks_passed=["kill_switch"],
        signal_id=modified.message_id,
    )
    return derive(modified, intent, producer="feasibility")


def _fills(ctx: ServiceContext, intent: Message) -> list[Message]:
    return [m for m in Execution(ctx).handle(intent) if isinstance(m, FillMessage)]


def _traded(lab: Lab, ctx: ServiceContext, minute: int, close: float, **kw: object) -> Message:
    """A bar at `close`, a signal on it and the paper broker's one fill of its intent."""
    (fill,) = _fills(ctx, _signal_intent(lab, _bar(lab, minute, close), **kw))  # type: ignore[arg-type]
    return fill


def test_tca_is_a_pipeline_service_after_positions() -> None:
    assert service_class("tca") is TcaMonitor
    assert PIPELINE_ORDER == PIPELINE_SERVICES
    assert PIPELINE_ORDER.index("tca") == PIPELINE_ORDER.index("positions") + 1


def test_a_fill_is_measured_against_the_close_of_the_bar_behind_it(
    lab: Lab, ctx: ServiceContext
) -> None:
    fill = _traded(lab, ctx, 0, 100.0)
    assert TcaMonitor(ctx).handle(fill) == []
    (cost,) = lab.records.fill_costs()
    price = 100.0 * (1 + SLIP)  # 100.05
    assert (cost.arrival_price, cost.price, cost.arrival_at) == (100.0, pytest.approx(price), T0)
    assert cost.slippage_bps == pytest.approx(5.0)
    assert cost.correlation_id == fill.correlation_id
    assert (cost.broker, cost.strategy, cost.shadow_price) == ("paper", "sma_cross", None)
    (order,) = lab.records.order_costs()
    fee = 2 * price * FEE  # 0.2001
    assert order.fees == pytest.approx(fee)
    assert order.execution_cost == pytest.approx(2 * 0.05)
    assert order.opportunity_cost == 0.0
    assert order.shortfall == pytest.approx(0.1 + fee)
    assert order.shortfall_bps == pytest.approx((0.1 + fee) / 200 * 10_000)  # 15.005
    horizons = lab.records.signal_horizons()
    assert [h.horizon_bars for h in horizons] == list(HORIZONS_BARS)
    assert {(h.status, h.quantity, h.strength, h.side) for h in horizons} == {
        ("open", 2.0, 0.5, "buy")
    }
    assert (
        horizons[0].signal_id
        == lab.records.attribution(execution_id=cost.execution_id)[0].trade.raw_signal_id
    )


def test_a_redelivered_fill_changes_nothing(lab: Lab, ctx: ServiceContext) -> None:
    fill = _traded(lab, ctx, 0, 100.0)
    tca = TcaMonitor(ctx)
    tca.handle(fill)
    before = (
        [(c.execution_id, c.slippage_bps) for c in lab.records.fill_costs()],
        [(o.client_order_id, o.shortfall) for o in lab.records.order_costs()],
        [(h.signal_id, h.horizon_bars, h.quantity) for h in lab.records.signal_horizons()],
    )
    TcaMonitor(ctx).handle(fill)  # a redelivery, maybe to another consumer
    tca.handle(fill)
    after = (
        [(c.execution_id, c.slippage_bps) for c in lab.records.fill_costs()],
        [(o.client_order_id, o.shortfall) for o in lab.records.order_costs()],
        [(h.signal_id, h.horizon_bars, h.quantity) for h in lab.records.signal_horizons()],
    )
    assert after == before
    assert len(after[0]) == 1 and len(after[2]) == len(HORIZONS_BARS)


def test_horizons_close_as_their_bars_come_then_the_outcome_is_written_and_audited(
    lab: Lab, ctx: ServiceContext
) -> None:
    fill = _traded(lab, ctx, 0, 100.0)
    tca = TcaMonitor(ctx)
    tca.handle(fill)
    assert tca.complete() == []  # no bar after the signal yet
    _bars(lab, {m: 100.0 + m for m in range(1, 6)})  # the 5th bar after closes at 105
    assert tca.complete() == []  # 5 bars closed, 15 and 60 still open: no outcome yet
    done = lab.records.signal_horizons(status="done")
    price, fee = 100.0 * (1 + SLIP), 2 * 100.0 * (1 + SLIP) * FEE
    assert [(h.horizon_bars, h.exit_price, h.exit_at) for h in done] == [
        (5, 105.0, T0 + timedelta(minutes=5))
    ]
    assert done[0].forward_return == pytest.approx(0.05)
    assert done[0].pnl == pytest.approx(2 * (105.0 - price) - fee)  # 9.7 - 0.2001
    rates = lab.cache.get_win_rates()["sma_cross"]
    assert (rates.wins, rates.total) == (1, 1)
    assert "sma_cross" not in lab.cache.get_ics()  # one outcome ranks nothing
    _bars(lab, {m: 110.0 - m / 10 for m in range(6, 61)})  # the 60th closes at 104
    (audit,) = tca.complete()
    assert isinstance(audit, AuditMessage)
    assert audit.payload.action == "signal_outcome.close"
    assert audit.correlation_id == fill.correlation_id
    assert audit.payload.new_value["outcome"] == "win"  # type: ignore[index]
    with lab.records.session() as s:
        (outcome,) = s.query(SignalOutcome).all()
    assert outcome.signal_id == done[0].signal_id
    assert (outcome.outcome, outcome.holding_seconds) == ("win", 3600.0)
    assert outcome.pnl == pytest.approx(2 * (104.0 - price) - fee)
    assert outcome.slippage_bps == pytest.approx(5.0)
    assert tca.complete() == []  # closed once
    assert lab.records.signal_horizons(status="open") == []


def test_a_signal_whose_horizons_closed_before_a_crash_is_concluded_after_it(
    lab: Lab, ctx: ServiceContext
) -> None:
    TcaMonitor(ctx).handle(_traded(lab, ctx, 0, 100.0))
    for h in lab.records.signal_horizons():  # closed by a run that died before concluding
        lab.records.close_signal_horizon(
            h.signal_id, h.horizon_bars, exit_at=T0, exit_price=99.0, forward_return=-0.01, pnl=-2
        )
    restarted = TcaMonitor(ctx)
    (audit,) = restarted.complete()
    assert audit.payload.new_value["outcome"] == "loss"  # type: ignore[attr-defined]
    with lab.records.session() as s:
        assert [o.outcome for o in s.query(SignalOutcome)] == ["loss"]
    assert restarted.complete() == []


def test_signals_a_run_ends_do_not_crowd_a_crash_leftover_out_of_the_sweep(
    lab: Lab, ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tca_service, "SWEEP_LIMIT", 1)  # the sweep takes one signal a run
    tca = TcaMonitor(ctx)
    tca.handle(_traded(lab, ctx, 0, 100.0))  # ended by the run below
    tca.handle(_traded(lab, ctx, 1, 100.0))  # closed by a run that died before concluding
    (left,) = {h.signal_id for h in lab.records.signal_horizons() if h.signal_at > T0}
    for h in lab.records.signal_horizons(signal_id=left):
        lab.records.close_signal_horizon(
            h.signal_id, h.horizon_bars, exit_at=T0, exit_price=99.0, forward_return=-0.01, pnl=-2
        )
    _bars(lab, dict.fromkeys(range(2, 61), 100.0))
    restarted = TcaMonitor(ctx)
    audits = restarted.complete()  # the older signal it ends first, the leftover in the same run
    assert sorted(a.payload.target for a in audits) == sorted(  # type: ignore[attr-defined]
        f"signal:{s}" for s in {h.signal_id for h in lab.records.signal_horizons()}
    )
    with lab.records.session() as s:
        assert len(s.query(SignalOutcome).all()) == 2
    assert restarted.complete() == []


def test_win_rate_and_ic_over_the_strategys_outcomes_go_to_the_cache(
    lab: Lab, ctx: ServiceContext
) -> None:
    tca = TcaMonitor(ctx)
    for minute, strength in ((0, 0.9), (1, 0.2), (2, 0.5)):
        tca.handle(_traded(lab, ctx, minute, 100.0, strength=strength))
    # 5-bar exits: minute 5 -> 103, 6 -> 101, 7 -> 99 (forward returns .03, .01, -.01)
    _bars(lab, {3: 100.0, 4: 100.0, 5: 103.0, 6: 101.0, 7: 99.0})
    tca.complete()
    rates = lab.cache.get_win_rates()["sma_cross"]
    assert (rates.wins, rates.total) == (2, 3)  # 99 is below the 100.05 paid
    # strength ranks 3 1 2 against return ranks 3 2 1: 1 - 6 * 2 / (3 * 8)
    ic = lab.cache.get_ics()["sma_cross"]
    assert (ic.ic, ic.samples) == (pytest.approx(0.5), 3)


def _venue_fill(lab: Lab, bar: Message, *, price: float, quantity: float = 2.0) -> Message:
    """A fill from Alpaca paper as its Execution leaves it: the order (broker alpaca), the fill
    and the trade with its chain in the records, and the fill message on its way."""
    intent = _signal_intent(lab, bar, quantity=quantity)
    modified = lab.records.signal(intent.payload.signal_id)  # type: ignore[attr-defined]
    assert modified is not None
    cid, execution_id = f"tl-{intent.message_id}", f"alpaca-{intent.message_id[:8]}-1"
    at = T0 + timedelta(seconds=20)
    lab.records.record_order(
        client_order_id=cid,
        symbol="AAPL",
        side="buy",
        quantity=quantity,
        strategy="sma_cross",
        broker="alpaca",
        intent_id=intent.message_id,
        correlation_id=intent.correlation_id,
        time_in_force="gtc",
    )
    lab.records.record_fill(
        execution_id=execution_id,
        client_order_id=cid,
        symbol="AAPL",
        side="buy",
        quantity=quantity,
        price=price,
        filled_at=at,
        fee=0.0,
        broker="alpaca",
    )
    lab.records.record_trade(
        execution_id=execution_id,
        client_order_id=cid,
        correlation_id=intent.correlation_id,
        symbol="AAPL",
        side="buy",
        quantity=quantity,
        price=price,
        executed_at=at,
        market_data_message_id=bar.message_id,
        raw_signal_id=modified.payload["raw_signal_id"],
        modified_signal_id=modified.message_id,
        intent_id=intent.message_id,
        strategy="sma_cross",
    )
    fill = Fill(
        client_order_id=cid,
        broker_order_id="0b0c4a4e-alpaca",
        execution_id=execution_id,
        symbol="AAPL",
        side="buy",  # type: ignore[arg-type]
        quantity=quantity,
        price=price,
        fee=0.0,
        fee_currency="USD",
        liquidity="taker",  # type: ignore[arg-type]
        ts=at,
    )
    return derive(intent, fill, producer="execution")


def test_a_venue_fill_is_shadowed_by_the_paper_fill_model_on_the_same_order_and_bar(
    lab: Lab, ctx: ServiceContext
) -> None:
    fill = _venue_fill(lab, _bar(lab, 0, 100.0), price=100.02)
    TcaMonitor(ctx).handle(fill)
    (cost,) = lab.records.fill_costs()
    assert (cost.broker, cost.slippage_bps) == ("alpaca", pytest.approx(2.0))
    model_price = 100.0 * (1 + SLIP)  # the paper model: close + 5 bps, all of it, 10 bps fee
    assert cost.shadow_quantity == 2.0
    assert cost.shadow_price == pytest.approx(model_price)
    assert cost.shadow_fee == pytest.approx(2 * model_price * FEE)
    assert cost.shadow_price_diff_bps == pytest.approx((model_price - 100.02) / 100.02 * 1e4)


def test_the_shadow_follows_the_paper_brokers_configured_model(
    lab: Lab, ctx: ServiceContext
) -> None:
    lab.records.set_config(
        "broker.paper.participation", 0.001, changed_by="user:test", reason="thin bars"
    )
    fill = _venue_fill(lab, _bar(lab, 0, 100.0, volume=1_000.0), price=100.0)
    TcaMonitor(ctx).handle(fill)
    (cost,) = lab.records.fill_costs()
    assert cost.shadow_quantity == pytest.approx(1.0)  # 0.1% of 1,000: the model fills half


def test_an_arrival_bar_the_cache_lost_is_read_from_the_lake(lab: Lab, ctx: ServiceContext) -> None:
    fill = _traded(lab, ctx, 0, 100.0)
    frame = lab.cache.get_bars("AAPL", "1m")
    lab.lake.write_bars(frame)
    lab.cache.redis.delete(lab.keys.bars("AAPL", "1m"))
    _bar(lab, 30, 120.0)  # the cache now starts long after the signal
    TcaMonitor(ctx).handle(fill)
    (cost,) = lab.records.fill_costs()
    assert (cost.arrival_price, cost.slippage_bps) == (100.0, pytest.approx(5.0))


def test_horizons_whose_bars_the_cache_lost_are_closed_from_the_lake(
    lab: Lab, ctx: ServiceContext
) -> None:
    tca = TcaMonitor(ctx)
    tca.handle(_traded(lab, ctx, 0, 100.0))
    _bars(lab, {m: 100.0 + m for m in range(1, 6)})  # the 5th bar after closes at 105
    lab.lake.write_bars(lab.cache.get_bars("AAPL", "1m"))
    lab.cache.redis.delete(lab.keys.bars("AAPL", "1m"))
    _bar(lab, 30, 120.0)  # the cache now starts long after the signal
    assert tca.complete() == []
    (done,) = lab.records.signal_horizons(status="done")
    assert (done.horizon_bars, done.exit_price, done.exit_at) == (
        5,
        105.0,
        T0 + timedelta(minutes=5),
    )


def test_a_manual_order_has_no_arrival_bar_and_no_signal_to_follow(
    lab: Lab, ctx: ServiceContext
) -> None:
    bar = _bar(lab, 0, 100.0)
    intent = new_message(
        Intent(
            symbol="AAPL",
            side="sell",  # type: ignore[arg-type]
            quantity=1.0,
            order_type="market",  # type: ignore[arg-type]
            time_in_force="gtc",  # type: ignore[arg-type]
            strategy="manual",
            reduce_only=False,
            checks_passed=[],
        ),
        producer="feasibility",
        correlation_id=bar.message_id,
    )
    (fill,) = _fills(ctx, intent)
    TcaMonitor(ctx).handle(fill)
    (cost,) = lab.records.fill_costs()
    assert (cost.arrival_price, cost.slippage_bps, cost.signal_id) == (None, None, None)
    assert lab.records.order_costs() == [] and lab.records.signal_horizons() == []


def test_a_signal_whose_bars_stop_coming_expires(lab: Lab, ctx: ServiceContext) -> None:
    TcaMonitor(ctx).handle(_traded(lab, ctx, 0, 100.0))
    later = ServiceContext(
        lab=lab, settings=lab.settings, instance="t", clock=lambda: time.time() + 86_400
    )
    (audit,) = TcaMonitor(later).complete()
    assert audit.payload.new_value["outcome"] == "expired"  # type: ignore[attr-defined]
    assert {h.status for h in lab.records.signal_horizons()} == {"expired"}
    with lab.records.session() as s:
        (outcome,) = s.query(SignalOutcome).all()
    assert (outcome.outcome, outcome.pnl) == ("expired", None)


def test_nonsense_is_refused_with_a_reason(lab: Lab, ctx: ServiceContext) -> None:
    tca = TcaMonitor(ctx)
    bar = _bar(lab, 0, 100.0)
    with pytest.raises(ContractError, match=r"tca takes fills, not market_data\.bar"):
        tca.handle(bar)
    fill = _traded(lab, ctx, 1, 100.0)
    unknown = fill.model_copy(
        update={"payload": fill.payload.model_copy(update={"execution_id": "nobody-1"})}
    )
    with pytest.raises(ValidationError, match="nobody-1 has no trade in the records"):
        tca.handle(unknown)
    lying = fill.model_copy(update={"payload": fill.payload.model_copy(update={"price": 1.0})})
    with pytest.raises(ValidationError, match="disagrees with the trade"):
        tca.handle(lying)
    assert lab.records.fill_costs() == []


def test_fills_read_from_the_bus_are_measured_through_the_runner(
    lab: Lab, ctx: ServiceContext
) -> None:
    from tradeos_lab.keys import Stream
    from tradeos_lab.pipeline.runner import ServiceRunner

    fill = _traded(lab, ctx, 0, 100.0)
    lab.bus.publish(Stream.FILLS_RAW, fill)
    runner = ServiceRunner(TcaMonitor, ctx)
    runner.drain()
    runner.drain()
    assert [c.execution_id for c in lab.records.fill_costs()] == [fill.payload.execution_id]  # type: ignore[attr-defined]


def _orphan(fill: Message) -> Message:
    """A fill message of its own whose execution the records do not hold."""
    payload = fill.payload.model_copy(update={"execution_id": "nobody-1"})
    return derive(fill, payload, producer="execution")


def test_a_batch_of_fills_is_measured_as_each_alone_and_a_bad_fill_fails_the_batch(
    lab: Lab, ctx: ServiceContext
) -> None:
    fills = [_traded(lab, ctx, minute, 100.0 + minute) for minute in range(3)]
    tca = TcaMonitor(ctx)
    with pytest.raises(ValidationError, match="nobody-1 has no trade in the records"):
        tca.handle_batch([fills[0], _orphan(fills[1]), fills[2]])
    assert lab.records.fill_costs() == []  # the batch's transaction rolled back as a whole
    assert tca.handle_batch([*fills, fills[0]]) == [[], [], [], []]  # one delivered twice
    costs = lab.records.fill_costs()
    assert [(c.execution_id, c.arrival_price) for c in costs] == [
        (f.payload.execution_id, 100.0 + minute)  # type: ignore[attr-defined]
        for minute, f in enumerate(fills)
    ]
    assert [c.slippage_bps for c in costs] == [pytest.approx(5.0)] * 3
    orders = lab.records.order_costs()
    assert sorted(o.client_order_id for o in orders) == sorted(c.client_order_id for c in costs)
    # 5 bps of slippage and 10 of fees on each, all filled
    assert [o.shortfall_bps for o in orders] == [pytest.approx(5 + 10 * (1 + SLIP))] * 3
    horizons = lab.records.signal_horizons()
    assert len(horizons) == 3 * len(HORIZONS_BARS)
    assert {h.signal_id for h in horizons} == {c.signal_id for c in costs}
    assert {(h.status, h.quantity, h.side) for h in horizons} == {("open", 2.0, "buy")}


def test_a_fill_without_a_trade_in_a_batch_read_from_the_bus_is_dead_lettered_alone(
    lab: Lab, ctx: ServiceContext
) -> None:
    from tradeos_lab.keys import Stream
    from tradeos_lab.pipeline.runner import ServiceRunner

    fills = [_traded(lab, ctx, minute, 100.0) for minute in range(3)]
    settings = lab.settings.model_copy(update={"max_deliveries": 2, "claim_idle_ms": 100})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        strict = tl.connect(settings, start=False)
    try:
        strict.bus.publish_many(Stream.FILLS_RAW, [fills[0], _orphan(fills[1]), *fills[1:]])
        runner = ServiceRunner(
            TcaMonitor, ServiceContext(lab=strict, settings=settings, instance="t")
        )
        deadline = time.monotonic() + 30
        while runner.counts.dead_lettered == 0 and time.monotonic() < deadline:
            runner.run_once(block_ms=100)
        (reason,) = strict.bus.inspect.dead_letters(Stream.FILLS_RAW)["error"]
    finally:
        strict.close()
    assert "nobody-1 has no trade in the records" in reason
    assert sorted(c.execution_id for c in lab.records.fill_costs()) == sorted(
        f.payload.execution_id  # type: ignore[attr-defined]
        for f in fills
    )
