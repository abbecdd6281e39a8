"""How a broker update moves an order: the one transition rule every writer of `orders` applies.

Brokers report an order's life as a stream of updates that may arrive late, twice or out of
order. `advance` folds one update into the order's state so that, whatever the arrival order:

- an update older than the last one applied (by broker sequence when both have one, else by
  broker timestamp) changes nothing;
- the status never moves back (new < submitted < accepted < partially_filled < terminal);
- a terminal status (filled, canceled, rejected, expired) is absorbing;
- the filled quantity never decreases and never exceeds the order's quantity.

It is a pure function so that it can be proved on its own (a hypothesis test) and applied by the
store under a row lock (`RecordsStore.apply_order_update`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import datetime

from tradeos_lab.contracts.enums import OrderStatus
from tradeos_lab.errors import ValidationError

STATUS_RANK: dict[OrderStatus, int] = {
    OrderStatus.NEW: 0,
    OrderStatus.SUBMITTED: 1,
    OrderStatus.ACCEPTED: 2,
    OrderStatus.PARTIALLY_FILLED: 3,
    OrderStatus.FILLED: 4,
    OrderStatus.CANCELED: 4,
    OrderStatus.REJECTED: 4,
    OrderStatus.EXPIRED: 4,
}
"""How far along its life a status is; an order never moves to a lower rank."""

_UNFILLED = frozenset({OrderStatus.NEW, OrderStatus.SUBMITTED, OrderStatus.ACCEPTED})
_REL_TOL = 1e-9  # float slack when comparing a cumulative filled quantity with the order's


@dataclass(frozen=True)
class OrderState:
    """What the records hold about an order's progress at the broker."""

    quantity: float
    status: OrderStatus = OrderStatus.NEW
    filled_quantity: float = 0.0
    avg_price: float | None = None
    broker_order_id: str | None = None
    reason: str | None = None
    broker_at: datetime | None = None
    broker_sequence: int | None = None


@dataclass(frozen=True)
class OrderUpdate:
    """One broker report: the order's status and cumulative fill as of `broker_at`.

    `filled_quantity` is cumulative (as brokers report it); None keeps the recorded one, except
    that `filled` means the whole quantity. `sequence` is the broker's own ordering, when it has
    one; it wins over timestamps, which can tie.
    """

    status: OrderStatus
    broker_at: datetime
    filled_quantity: float | None = None
    avg_price: float | None = None
    broker_order_id: str | None = None
    reason: str | None = None
    sequence: int | None = None


def check_update(update: OrderUpdate, quantity: float) -> None:
    """Raise `ValidationError` when an update contradicts itself or the order's quantity."""
    filled = update.filled_quantity
    status = update.status
    if filled is not None:
        if not math.isfinite(filled) or filled < 0:
            raise ValidationError(f"filled_quantity must be a finite number >= 0, got {filled}")
        if filled > quantity * (1 + _REL_TOL):
            raise ValidationError(f"filled_quantity {filled} exceeds the order quantity {quantity}")
        if status is OrderStatus.FILLED and filled < quantity * (1 - _REL_TOL):
            raise ValidationError(f"a filled order has filled_quantity {filled} of {quantity}")
        if status in _UNFILLED and filled > 0:
            raise ValidationError(f"a {status.value} order has filled_quantity {filled}")
    if status is OrderStatus.PARTIALLY_FILLED and (
        filled is None or not 0 < filled < quantity * (1 - _REL_TOL)
    ):
        raise ValidationError(
            f"a partially filled update needs 0 < filled_quantity < {quantity}, got {filled}"
        )
    if update.avg_price is not None and not (
        math.isfinite(update.avg_price) and update.avg_price > 0
    ):
        raise ValidationError(f"avg_price must be a positive number, got {update.avg_price}")
    if status is OrderStatus.REJECTED and not update.reason:
        raise ValidationError("a rejected update needs a reason")
    if update.broker_at.tzinfo is None:
        raise ValidationError("broker_at has no time zone; pass UTC")


def is_newer(update: OrderUpdate, state: OrderState) -> bool:
    """Whether `update` comes after the last update applied to `state`.

    Sequences decide when both sides have one (a repeat is not newer); otherwise timestamps do,
    and an equal timestamp counts as newer: the rank and fill guards of `advance` keep such a tie
    from moving the order back.
    """
    if state.broker_at is None:
        return True
    if update.sequence is not None and state.broker_sequence is not None:
        return update.sequence > state.broker_sequence
    return update.broker_at >= state.broker_at


def advance(state: OrderState, update: OrderUpdate) -> OrderState:
    """The order after `update`; `state` itself (the same object) when it changes nothing.

    Raises `ValidationError` for an update that is wrong on its own (see `check_update`).
    """
    check_update(update, state.quantity)
    if state.status.is_terminal or not is_newer(update, state):
        return state
    if STATUS_RANK[update.status] < STATUS_RANK[state.status]:
        return state
    filled = update.filled_quantity
    if filled is None:
        filled = state.quantity if update.status is OrderStatus.FILLED else state.filled_quantity
    if filled < state.filled_quantity:
        return state
    filled = min(filled, state.quantity)
    new = dataclasses.replace(
        state,
        status=update.status,
        filled_quantity=filled,
        avg_price=update.avg_price if update.avg_price is not None else state.avg_price,
        broker_order_id=update.broker_order_id or state.broker_order_id,
        reason=update.reason or state.reason,
        broker_at=max(update.broker_at, state.broker_at or update.broker_at),
        broker_sequence=update.sequence if update.sequence is not None else state.broker_sequence,
    )
    return state if new == state else new
