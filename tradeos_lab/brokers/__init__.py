"""Brokers behind one protocol (`Broker`): the paper broker, its state in the records."""

from tradeos_lab.brokers.base import (
    TERMINAL_STATUSES,
    Broker,
    BrokerAccount,
    BrokerFill,
    BrokerOrder,
    OrderReport,
    OrderRequest,
)
from tradeos_lab.brokers.paper import PaperBroker, PaperConfig, cached_bar

__all__ = [
    "TERMINAL_STATUSES",
    "Broker",
    "BrokerAccount",
    "BrokerFill",
    "BrokerOrder",
    "OrderReport",
    "OrderRequest",
    "PaperBroker",
    "PaperConfig",
    "cached_bar",
]
