"""One exception hierarchy for the workbench.

Every class says what the operator should do in its `action` attribute, kept out of the message
text: the text of an error ends up in dead letters, risk events and logs, where the same advice on
every line is noise; the CLI prints the action on a line of its own. Third-party errors are
translated at the edge (`raise X from e`); only subclasses of `TransientError` are retried.
"""

from __future__ import annotations


class TradeosError(Exception):
    """Base of every error the workbench raises on purpose."""

    #: What the operator should do about it; shown by the CLI, never part of `str(error)`.
    action = "See the message."


class ConfigError(TradeosError):
    """A setting is unknown or has a bad value; nothing was started."""

    action = "Fix the named setting in the config file, environment or command line."


class StackError(TradeosError):
    """The embedded stack could not be started, found or stopped."""

    action = "Check the data directory and `tradeos-lab status`."


class StackNotRunning(StackError):
    """No stack runs for the data directory and the caller asked not to start one."""

    action = "Start it with `tradeos-lab up` (or let a script own one: `tl.connect(start=True)`)."


class PartNotConnected(TradeosError):
    """The lab was connected without this part (`tl.connect(parts=...)`)."""

    action = "Name the part in `tl.connect(parts=...)`, or leave `parts` out for every part."


class StackAlreadyRunning(StackError):
    """Another live process owns this data directory."""

    action = "Use the running stack (`tradeos-lab status`) or stop it with `tradeos-lab down`."


class LakeInUse(StackAlreadyRunning):
    """Another process has the embedded (chdb) lake open; chdb allows one process per directory."""

    action = (
        "Connect through the running stack (`tl.connect()` uses its lake gateway) "
        "or stop it with `tradeos-lab down`."
    )


class DataDirError(StackError):
    """The data directory cannot be created, locked or written."""

    action = "Choose a writable directory with TRADEOS_DATA_DIR or --data-dir."


class PortInUseError(StackError):
    """A configured TCP port is already taken by another process."""

    action = "Free the port or choose another one in the settings."


class ValidationError(TradeosError, ValueError):
    """Input (a message, a symbol, a bar, a parameter) is malformed; nothing was written."""

    action = "Correct the input; nothing was written."


class ContractError(ValidationError):
    """A message does not match its stream's data contract."""


class SymbolError(ValidationError):
    """A symbol is not a valid ticker."""


class StoreError(TradeosError):
    """A store (records, lake, bar store) refused an operation."""

    action = "Check the store's health with `tradeos-lab status`."


class TransientError(TradeosError):
    """A dependency is briefly unavailable; the operation may be retried with backoff."""

    action = "Retried automatically; if it persists check the dependency's health."


class DependencyUnavailable(TransientError):
    """A server (Redis, database, lake, provider) cannot be reached."""


class CircuitOpen(DependencyUnavailable):
    """A dependency's circuit breaker is open after repeated failures: calls to it are refused
    (not attempted) until its cooldown ends; `dependency` names the breaker."""

    action = "Calls resume by themselves after the cooldown; check the named dependency's health."

    def __init__(self, message: str, dependency: str | None = None) -> None:
        super().__init__(message)
        self.dependency = dependency


class ProviderError(TradeosError):
    """A market-data or broker provider answered with a permanent error."""

    action = "Check the provider request (symbol, timeframe, range, credentials)."


class RateLimited(TransientError):
    """A rate limit is exhausted; wait for the window to pass."""


class ProviderRateLimited(RateLimited):
    """A provider answered HTTP 429; `retry_after` is the wait it asked for, in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OrderRejected(ProviderError):
    """The broker refused an order or an order operation (HTTP 4xx with the broker's reason)."""

    action = "Read the broker's reason; correct the order or the account before sending it again."

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class OrderNotFound(ProviderError):
    """The broker holds no order under the id asked for."""

    action = "Check the client order id; an order never submitted cannot be looked up or canceled."


class TradingHalted(TradeosError):
    """A kill switch forbids the order."""

    action = "Inspect the kill switches (`tradeos-lab flags`); clear them explicitly if safe."
