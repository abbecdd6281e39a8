"""Brokers behind one protocol (`Broker`): the paper broker (its state in the records) and
Alpaca's paper account (`AlpacaBroker`, loaded with alpaca-py only when used)."""

from typing import TYPE_CHECKING, Any

from tradeos_lab.brokers.base import (
    TERMINAL_STATUSES,
    Broker,
    BrokerAccount,
    BrokerFill,
    BrokerOrder,
    OrderReport,
    OrderRequest,
)
from tradeos_lab.brokers.paper import ModelFill, PaperBroker, PaperConfig, cached_bar, fill_model

if TYPE_CHECKING:
    from tradeos_lab.brokers.alpaca import AlpacaBroker

__all__ = [
    "TERMINAL_STATUSES",
    "AlpacaBroker",
    "Broker",
    "BrokerAccount",
    "BrokerFill",
    "BrokerOrder",
    "ModelFill",
    "OrderReport",
    "OrderRequest",
    "PaperBroker",
    "PaperConfig",
    "cached_bar",
    "fill_model",
]


def __getattr__(name: str) -> Any:
    # alpaca-py (and the websockets stack it imports) loads only when Alpaca is used.
    if name == "AlpacaBroker":
        from tradeos_lab.brokers.alpaca import AlpacaBroker

        return AlpacaBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
