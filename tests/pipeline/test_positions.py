"""Positions on the machine's Redis and PostgreSQL: each fill applied once to the ledger, the
position equal to the sum of the fills, the cache and the records' snapshots kept with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tradeos_lab.contracts import (
    Bar,
    Fill,
    FillMessage,
    Intent,
    Message,
    PositionMessage,
    new_message,
)
from tradeos_lab.errors import ValidationError
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.execution import Execution
from tradeos_lab.pipeline.services.positions import Positions, position_of
from tradeos_lab.settings import Settings
from tradeos_lab.stores.records import LedgerEntry

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


@pytest.fixture
def ctx(pipeline_lab: Lab, pipeline_settings: Settings) -> ServiceContext:
    return ServiceContext(lab=pipeline_lab, settings=pipeline_settings, instance="t")


def _trade(lab: Lab, ctx: ServiceContext, minute: int, side: str, quantity: float) -> list[Message]:
    """A bar at `100 + minute` and an intent through Execution; its fill messages."""
    close = 100.0 + minute
    ts = T0 + timedelta(minutes=minute)
    values = {"open": close, "high": close + 1, "low": close - 1, "close": close, "volume": 1e6}
    lab.cache.append_bar("BTC-USD", "1m", {**values, "ts": ts})
    lab.cache.set_price("BTC-USD", close)
    bar = new_message(
        Bar(symbol="BTC-USD", timeframe="1m", ts=ts, source="synthetic", **values),  # type: ignore[arg-type]
        producer="ingestion",
    )
    intent = new_message(
        Intent(
            symbol="BTC-USD",
            side=side,  # type: ignore[arg-type]
            quantity=quantity,
            order_type="market",  # type: ignore[arg-type]
            time_in_force="gtc",  # type: ignore[arg-type]
            strategy="sma_cross",
            reduce_only=False,
            checks_passed=[],
        ),
        producer="feasibility",
        correlation_id=bar.message_id,
    )
    return [m for m in Execution(ctx).handle(intent) if isinstance(m, FillMessage)]


def test_position_is_the_sum_of_the_fills_in_the_stream_cache_and_records(
    pipeline_lab: Lab, ctx: ServiceContext
) -> None:
    positions = Positions(ctx)
    updates = []
    for minute, side, quantity in ((0, "buy", 2.0), (1, "buy", 1.0), (2, "sell", 1.5)):
        for fill in _trade(pipeline_lab, ctx, minute, side, quantity):
            (update,) = positions.handle(fill)
            assert isinstance(update, PositionMessage)
            assert update.causation_id == fill.message_id
            updates.append(update.payload)
    fills = pipeline_lab.records.ledger(symbol="BTC-USD")
    total = sum(f.signed_quantity for f in fills)
    assert total == pytest.approx(1.5)
    assert updates[-1].quantity == pytest.approx(total)
    cached = pipeline_lab.cache.get_position("BTC-USD")
    assert cached is not None and cached.quantity == pytest.approx(total)
    (snapshot,) = pipeline_lab.records.latest_positions("paper")
    assert snapshot.quantity == pytest.approx(total)
    account = pipeline_lab.cache.get_account()
    cash = 100_000 + sum(-f.signed_quantity * f.price - f.fee for f in fills)
    assert account is not None and account.balance == pytest.approx(cash)
    assert account.portfolio_value == pytest.approx(cash + total * 102.0)


def test_a_fill_delivered_twice_is_applied_once(pipeline_lab: Lab, ctx: ServiceContext) -> None:
    positions = Positions(ctx)
    (fill,) = _trade(pipeline_lab, ctx, 0, "buy", 2.0)
    first = positions.handle(fill)
    again = positions.handle(fill)
    assert [m.payload.quantity for m in (*first, *again)] == [2.0, 2.0]  # type: ignore[attr-defined]
    assert len(pipeline_lab.records.ledger()) == 1


def test_a_fill_of_an_unknown_order_is_refused(pipeline_lab: Lab, ctx: ServiceContext) -> None:
    fill = new_message(
        Fill(
            client_order_id="nobody",
            broker_order_id="b",
            execution_id="e",
            symbol="BTC-USD",
            side="buy",  # type: ignore[arg-type]
            quantity=1,
            price=1,
            fee=0,
            fee_currency="USD",
            liquidity="taker",  # type: ignore[arg-type]
            ts=T0,
        ),
        producer="execution",
    )
    with pytest.raises(ValidationError, match="do not hold"):
        Positions(ctx).handle(fill)
    assert pipeline_lab.records.ledger() == []


def test_snapshot_timer_keeps_the_book_and_publishes_open_positions(
    pipeline_lab: Lab, ctx: ServiceContext
) -> None:
    positions = Positions(ctx)
    assert positions.snapshot() == []
    _trade(pipeline_lab, ctx, 0, "buy", 2.0)  # recorded by Execution, not yet seen here
    (update,) = positions.snapshot()
    assert update.payload.quantity == 2.0  # type: ignore[attr-defined]
    assert [p.quantity for p in pipeline_lab.records.latest_positions("paper")] == [2.0]
    assert [t.name for t in positions.timers()] == ["snapshot"]


def _entry(signed: float, price: float, fee: float = 0.0) -> LedgerEntry:
    side = "buy" if signed > 0 else "sell"
    return LedgerEntry(
        signed_quantity=signed, quantity=abs(signed), price=price, fee=fee, side=side
    )


def test_average_cost_realises_pnl_on_reductions_and_reopens_through_flat() -> None:
    entries = [_entry(2, 100), _entry(2, 110, fee=1.0), _entry(-3, 120)]
    p = position_of("BTC-USD", entries, 130.0, T0)
    assert (p.quantity, p.avg_price) == (1.0, 105.0)
    assert p.realized_pnl == pytest.approx(3 * 15 - 1.0)
    assert p.unrealized_pnl == pytest.approx(25.0)
    flipped = position_of("BTC-USD", [*entries, _entry(-2, 100)], None, T0)
    assert (flipped.quantity, flipped.avg_price) == (-1.0, 100.0)
    assert flipped.realized_pnl == pytest.approx(44.0 - 5.0)
    flat = position_of("BTC-USD", [_entry(1, 100), _entry(-1, 90)], 95.0, T0)
    assert (flat.quantity, flat.avg_price, flat.realized_pnl) == (0.0, 0.0, -10.0)


def _unrecorded_fill(lab: Lab, order_fill: Message, execution_id: str) -> Message:
    """Another execution of `order_fill`'s order that no broker recorded yet."""
    payload = order_fill.payload.model_copy(update={"execution_id": execution_id, "quantity": 0.5})
    return new_message(payload, producer="execution")


def test_fills_not_recorded_yet_are_recorded_and_a_failed_batch_leaves_the_book_as_it_was(
    pipeline_lab: Lab, ctx: ServiceContext
) -> None:
    positions = Positions(ctx)
    (recorded,) = _trade(pipeline_lab, ctx, 0, "buy", 2.0)
    fresh = _unrecorded_fill(pipeline_lab, recorded, "extra-1")
    unknown = new_message(
        recorded.payload.model_copy(  # type: ignore[attr-defined]
            update={"execution_id": "orphan-1", "client_order_id": "nobody"}
        ),
        producer="execution",
    )
    with pytest.raises(ValidationError, match="do not hold"):
        positions.handle_batch([recorded, fresh, unknown])
    assert [e.execution_id for e in pipeline_lab.records.ledger()] == [
        recorded.payload.execution_id  # type: ignore[attr-defined]
    ]
    # the batch again without the bad fill: each fill moves the book once
    out = positions.handle_batch([recorded, fresh])
    assert [o[0].payload.quantity for o in out] == [2.0, 2.5]  # type: ignore[attr-defined]
    assert sorted(e.execution_id for e in pipeline_lab.records.ledger()) == sorted(
        ["extra-1", recorded.payload.execution_id]  # type: ignore[attr-defined]
    )
    assert [o[0].payload.quantity for o in positions.handle_batch([fresh])] == [2.5]  # type: ignore[attr-defined]
