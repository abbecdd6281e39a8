"""The shadow fill: what the built-in paper broker would have done with a real venue's order.

For a fill from a real venue (Alpaca paper), the paper broker's fill model is run on the same
order and bar (the bar that caused the order), with the order's earlier fills already counted;
the differences in price, quantity and fee are what the model must be calibrated by.
"""

from __future__ import annotations

from dataclasses import dataclass

from tradeos_lab.brokers import PaperBroker
from tradeos_lab.brokers.paper import order_fill
from tradeos_lab.contracts import Bar, Side
from tradeos_lab.errors import ValidationError
from tradeos_lab.stores.records import Order
from tradeos_lab.tca.costs import BPS, side_sign


@dataclass(frozen=True)
class ShadowFill:
    """A venue's fill beside the paper model's fill of the same order on the same bar."""

    side: Side
    venue_quantity: float
    venue_price: float
    venue_fee: float
    quantity: float
    """What the model fills on the bar (0 when it would fill nothing, e.g. a limit not reached)."""
    price: float | None
    fee: float

    @property
    def quantity_diff(self) -> float:
        """Model minus venue: positive when the model fills more."""
        return self.quantity - self.venue_quantity

    @property
    def fee_diff(self) -> float:
        """Model minus venue: positive when the model charges more."""
        return self.fee - self.venue_fee

    @property
    def price_diff_bps(self) -> float | None:
        """Model against venue price in bps of the venue's, signed like slippage: positive when
        the model's price is worse for the order (higher for a buy, lower for a sell)."""
        if self.price is None:
            return None
        return side_sign(self.side) * (self.price - self.venue_price) / self.venue_price * BPS


def shadow_fill(
    model: PaperBroker,
    order: Order,
    bar: Bar,
    *,
    filled_before: float,
    venue_quantity: float,
    venue_price: float,
    venue_fee: float,
) -> ShadowFill:
    """Run `model`'s fill model (its configured slippage, participation, limit rule and fee) on
    `order` and `bar` with `filled_before` already filled, beside the venue's fill."""
    if bar.symbol != order.symbol:
        raise ValidationError(f"the shadow of a {order.symbol} order needs a {order.symbol} bar")
    if filled_before < 0 or filled_before >= order.quantity:
        raise ValidationError(
            f"order {order.client_order_id} of {order.quantity:g} cannot have "
            f"{filled_before:g} filled before a fill"
        )
    shadow = order_fill(model.config, order, bar, filled_before)
    return ShadowFill(
        side=Side(order.side),
        venue_quantity=venue_quantity,
        venue_price=venue_price,
        venue_fee=venue_fee,
        quantity=shadow.quantity,
        price=shadow.price if shadow.quantity > 0 else None,
        fee=shadow.fee,
    )
