"""The closed vocabularies of the contracts.

A reader rejects a value it does not know: a trading stage must never guess what an unknown
order status or side means. Adding a value is therefore a minor version (see
`data_contracts/README.md`): readers are upgraded before writers.
"""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    """Which way an order or fill trades."""

    BUY = "buy"
    SELL = "sell"


class Direction(StrEnum):
    """Which exposure a signal asks for."""

    LONG = "long"
    SHORT = "short"
    FLAT = "flat"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(StrEnum):
    """How long an order stays working (Alpaca's set)."""

    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"
    OPG = "opg"
    CLS = "cls"


class OrderStatus(StrEnum):
    NEW = "new"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        """No further fill or status change can follow."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)


class Liquidity(StrEnum):
    """Whether a fill added liquidity (maker) or took it (taker)."""

    MAKER = "maker"
    TAKER = "taker"
    UNKNOWN = "unknown"


class RiskKind(StrEnum):
    """What a risk event reports: limit breaches, breakers, execution failures, data problems."""

    LIMIT_BREACH = "limit_breach"
    CIRCUIT_BREAKER = "circuit_breaker"
    KILL_SWITCH = "kill_switch"
    EXECUTION_FAILURE = "execution_failure"
    STREAM_TRIMMED = "stream_trimmed"
    DEAD_LETTER = "dead_letter"
    DATA_GAP = "data_gap"
    STALE_DATA = "stale_data"
    RATE_LIMITED = "rate_limited"
    RECONCILIATION = "reconciliation"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"
