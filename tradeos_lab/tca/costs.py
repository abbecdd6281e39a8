"""What an execution cost against the market when it was decided: slippage and shortfall.

Every cost is signed so that positive is a cost for a buy and for a sell alike: a buy paying
above the arrival price and a sell receiving below it both cost money.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from tradeos_lab.contracts import Side
from tradeos_lab.errors import ValidationError

BPS = 10_000.0


def side_sign(side: Side | str) -> int:
    """+1 for a buy, -1 for a sell."""
    if side == "buy":  # Side.BUY too (a str enum): the common cases, checked first
        return 1
    if side == "sell":
        return -1
    try:
        return 1 if Side(side) is Side.BUY else -1
    except ValueError:
        raise ValidationError(f"side must be buy or sell, not {side!r}") from None


def _finite(value: float, name: str) -> float:
    if value.__class__ is float and math.isfinite(value):  # the common case, checked first
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _amount(value: float, name: str, *, positive: bool = False) -> float:
    value = _finite(value, name)
    if value < 0 or (positive and value == 0):
        raise ValidationError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return value


def _price(value: float, name: str) -> float:
    return _amount(value, name, positive=True)


def slippage_bps(side: Side | str, price: float, arrival_price: float) -> float:
    """Slippage of a fill at `price` against `arrival_price`, in basis points of the arrival
    price: `sign * (price - arrival) / arrival * 10_000`, sign +1 for a buy and -1 for a sell,
    so positive is a cost on both sides."""
    sign = side_sign(side)
    fill, arrival = _price(price, "price"), _price(arrival_price, "arrival_price")
    return sign * (fill - arrival) / arrival * BPS


@dataclass(frozen=True)
class Shortfall:
    """An order's implementation shortfall and its parts, in money (positive = cost)."""

    ordered_quantity: float
    filled_quantity: float
    arrival_price: float
    avg_price: float | None
    fees: float
    execution_cost: float
    opportunity_cost: float

    @property
    def total(self) -> float:
        return self.execution_cost + self.fees + self.opportunity_cost

    @property
    def paper_notional(self) -> float:
        """What the whole order was worth at the arrival price (the paper portfolio's trade)."""
        return self.ordered_quantity * self.arrival_price

    @property
    def bps(self) -> float:
        """The total in basis points of the paper notional."""
        return self.total / self.paper_notional * BPS


def implementation_shortfall(
    side: Side | str,
    *,
    ordered_quantity: float,
    arrival_price: float,
    fills: Iterable[tuple[float, float, float]],
    last_price: float,
) -> Shortfall:
    """Implementation shortfall of one order: the paper trade (all of `ordered_quantity` at the
    arrival price, no fees) against what was executed.

    With `s` = +1 for a buy, -1 for a sell, `P0` the arrival price, fills `(q_i, p_i, fee_i)`,
    `Q` the ordered quantity and `P_last` the last price:

        execution cost   = s * sum(q_i * (p_i - P0))
        fees             = sum(fee_i)
        opportunity cost = s * (Q - sum(q_i)) * (P_last - P0)
        shortfall        = execution cost + fees + opportunity cost

    The unfilled part is valued at the last price: a buy that missed a rising market pays that
    rise as opportunity cost. In bps, the shortfall is over the paper notional `Q * P0`.
    """
    sign = side_sign(side)
    ordered = _amount(ordered_quantity, "ordered_quantity", positive=True)
    arrival = _price(arrival_price, "arrival_price")
    last = _price(last_price, "last_price")
    filled = cost = fees = notional = 0.0
    for quantity, price, fee in fills:
        q = _amount(quantity, "fill quantity", positive=True)
        p = _price(price, "fill price")
        fees += _finite(fee, "fill fee")  # a rebate is negative
        filled += q
        notional += q * p
        cost += sign * q * (p - arrival)
    if filled > ordered * (1 + 1e-9):
        raise ValidationError(f"fills of {filled:g} exceed the ordered quantity {ordered:g}")
    unfilled = max(ordered - filled, 0.0)
    return Shortfall(
        ordered_quantity=ordered,
        filled_quantity=filled,
        arrival_price=arrival,
        avg_price=notional / filled if filled else None,
        fees=fees,
        execution_cost=cost,
        opportunity_cost=sign * unfilled * (last - arrival),
    )
