"""The one broker protocol Execution talks to: the built-in paper broker and Alpaca paper.

A broker is idempotent by `client_order_id`: submitting an id it already holds returns that
order as it stands and places nothing new, so a redelivered intent never doubles an order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from tradeos_lab.contracts import Liquidity, OrderStatus, OrderType, Side, TimeInForce

TERMINAL_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)
"""An order in one of these will never fill again."""


@dataclass(frozen=True)
class OrderRequest:
    """What Execution asks a broker to place; the ids let the broker's records keep the chain."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    time_in_force: TimeInForce = TimeInForce.DAY
    strategy: str | None = None
    intent_id: str | None = None
    correlation_id: str | None = None
    stop_price: float | None = None


@dataclass(frozen=True)
class BrokerOrder:
    """An order as the broker holds it now."""

    client_order_id: str
    broker_order_id: str | None
    symbol: str
    side: Side
    quantity: float
    order_type: OrderType
    limit_price: float | None
    time_in_force: TimeInForce
    status: OrderStatus
    filled_quantity: float
    avg_price: float | None
    reason: str | None
    updated_at: datetime
    strategy: str | None = None
    intent_id: str | None = None
    stop_price: float | None = None

    @property
    def is_open(self) -> bool:
        return self.status not in TERMINAL_STATUSES


@dataclass(frozen=True)
class BrokerFill:
    """One execution; `execution_id` is unique at the broker (the records' dedup key)."""

    execution_id: str
    client_order_id: str
    broker_order_id: str
    symbol: str
    side: Side
    quantity: float
    price: float
    fee: float
    fee_currency: str
    liquidity: Liquidity
    ts: datetime


@dataclass(frozen=True)
class OrderReport:
    """An order after a broker call and the fills that call made (for `get_order`: all)."""

    order: BrokerOrder
    fills: tuple[BrokerFill, ...] = ()


@dataclass(frozen=True)
class BrokerAccount:
    """Cash, signed positions by symbol and equity (cash plus positions at their marks)."""

    cash: float
    equity: float
    positions: Mapping[str, float] = field(default_factory=dict)
    currency: str = "USD"


class Broker(Protocol):
    """What Execution and Positions need from any broker."""

    name: str

    def submit(self, request: OrderRequest) -> OrderReport:
        """Place an order once per `client_order_id`; a repeat returns the first answer."""
        ...

    def get_order(self, client_order_id: str) -> OrderReport | None:
        """The order under `client_order_id` with all its fills, or None if never submitted."""
        ...

    def cancel(self, client_order_id: str) -> BrokerOrder:
        """Cancel a working order (a finished one is returned unchanged)."""
        ...

    def cancel_all(self) -> list[BrokerOrder]:
        """Cancel every working order; the orders as they end up."""
        ...

    def account(self) -> BrokerAccount: ...

    def positions(self) -> dict[str, float]:
        """Signed quantity per symbol with an open position."""
        ...
