"""The order transition rule (`order_state.advance`) on its own: properties over any arrival order
of broker updates, and the cases a broker really produces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeos_lab.contracts.enums import OrderStatus
from tradeos_lab.errors import ValidationError
from tradeos_lab.stores.records.order_state import (
    STATUS_RANK,
    OrderState,
    OrderUpdate,
    advance,
    is_newer,
)

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
QUANTITY = 10.0


@st.composite
def updates(draw: st.DrawFn, *, with_sequence: bool | None = None) -> OrderUpdate:
    """A valid broker update of a 10-share order, at any time, with or without a sequence."""
    status = draw(st.sampled_from(list(OrderStatus)))
    if status is OrderStatus.PARTIALLY_FILLED:
        filled: float | None = float(draw(st.integers(1, 9)))
    elif status is OrderStatus.FILLED:
        filled = draw(st.sampled_from([None, QUANTITY]))
    elif status in (OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED):
        filled = draw(st.sampled_from([None, 0.0, 3.0, 7.0]))
    else:
        filled = draw(st.sampled_from([None, 0.0]))
    seq = draw(st.booleans()) if with_sequence is None else with_sequence
    return OrderUpdate(
        status=status,
        broker_at=T0 + timedelta(seconds=draw(st.integers(0, 20))),
        filled_quantity=filled,
        avg_price=None if not filled else draw(st.sampled_from([100.0, 101.5])),
        reason="insufficient buying power" if status is OrderStatus.REJECTED else None,
        sequence=draw(st.integers(0, 20)) if seq else None,
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(updates(), max_size=12))
def test_no_arrival_order_moves_an_order_back_or_past_its_quantity(
    stream: list[OrderUpdate],
) -> None:
    state = OrderState(quantity=QUANTITY)
    for update in stream:
        after = advance(state, update)
        if state.status.is_terminal:
            assert after is state, "a terminal status is absorbing"
        if not is_newer(update, state):
            assert after is state, "an update older than the last applied changes nothing"
        assert STATUS_RANK[after.status] >= STATUS_RANK[state.status]
        assert state.filled_quantity <= after.filled_quantity <= QUANTITY
        if after.status is OrderStatus.FILLED:
            assert after.filled_quantity == QUANTITY
        state = after


@st.composite
def broker_histories(draw: st.DrawFn) -> list[OrderUpdate]:
    """What one honest broker reports for one order, in the order it happened: sequence and time
    increase, the status never moves back, the fill only grows."""
    fills = sorted(set(draw(st.lists(st.integers(1, 9), max_size=3))))
    history: list[tuple[OrderStatus, float | None]] = [
        (s, None) for s in draw(st.sampled_from([[], [OrderStatus.ACCEPTED]]))
    ]
    history += [(OrderStatus.PARTIALLY_FILLED, float(f)) for f in fills]
    last = draw(st.sampled_from([None, *[s for s in OrderStatus if s.is_terminal]]))
    if last is OrderStatus.FILLED:
        history.append((last, QUANTITY))
    elif last is not None:
        history.append((last, float(fills[-1]) if fills else 0.0))
    return [
        OrderUpdate(
            status=status,
            broker_at=T0 + timedelta(seconds=i),
            filled_quantity=filled,
            avg_price=100.0 if filled else None,
            reason="no" if status is OrderStatus.REJECTED else None,
            sequence=i,
        )
        for i, (status, filled) in enumerate(history)
    ]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_out_of_order_arrival_ends_where_the_broker_did(data: st.DataObject) -> None:
    history = data.draw(broker_histories())
    arrival = data.draw(st.permutations(history))
    in_order = OrderState(quantity=QUANTITY)
    for update in history:
        in_order = advance(in_order, update)
    shuffled = OrderState(quantity=QUANTITY)
    for update in [*arrival, *arrival]:  # every update twice: redelivery changes nothing
        shuffled = advance(shuffled, update)
    assert shuffled == in_order
    if history:
        assert shuffled.status is history[-1].status


def _update(status: OrderStatus, seconds: int, filled: float | None = None) -> OrderUpdate:
    return OrderUpdate(
        status=status, broker_at=T0 + timedelta(seconds=seconds), filled_quantity=filled
    )


def test_filled_order_does_not_regress_to_new_even_when_new_is_later() -> None:
    filled = advance(OrderState(quantity=QUANTITY), _update(OrderStatus.FILLED, 5))
    assert filled.filled_quantity == QUANTITY
    assert advance(filled, _update(OrderStatus.NEW, 9)) is filled


def test_late_older_partial_fill_changes_nothing() -> None:
    state = advance(OrderState(quantity=QUANTITY), _update(OrderStatus.PARTIALLY_FILLED, 5, 6))
    assert advance(state, _update(OrderStatus.PARTIALLY_FILLED, 3, 2)) is state


def test_sequence_orders_updates_with_equal_timestamps() -> None:
    first = OrderUpdate(
        status=OrderStatus.PARTIALLY_FILLED, broker_at=T0, filled_quantity=4, sequence=2
    )
    stale = OrderUpdate(
        status=OrderStatus.PARTIALLY_FILLED, broker_at=T0, filled_quantity=4, sequence=1
    )
    state = advance(OrderState(quantity=QUANTITY), first)
    assert advance(state, stale) is state


@pytest.mark.parametrize(
    ("status", "filled", "problem"),
    [
        (OrderStatus.PARTIALLY_FILLED, 11.0, "exceeds"),
        (OrderStatus.FILLED, 4.0, "filled order"),
        (OrderStatus.PARTIALLY_FILLED, None, "partially filled"),
        (OrderStatus.ACCEPTED, 2.0, "accepted order"),
        (OrderStatus.REJECTED, None, "reason"),
    ],
)
def test_self_contradicting_update_is_a_validation_error(
    status: OrderStatus, filled: float | None, problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        advance(OrderState(quantity=QUANTITY), _update(status, 1, filled))
