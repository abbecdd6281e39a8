"""What every bar provider shares: the protocol, request checks, the rate limiter, the last gate.

Empty versus failed: a provider returns an empty bar frame only when the source answered
successfully with no rows for the range (Coinbase publishes no candle for an interval without
trades; a market is closed; a file has no rows in the range). Every failure (HTTP error, timeout,
malformed payload, unknown symbol) raises, so an empty frame never hides an error. Callers that
expected data can tell the two apart: an exception is a failure, an empty frame is the source's
answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, Self, runtime_checkable

import pandas as pd

from tradeos_lab.bars import utc_timestamp, validate_bars
from tradeos_lab.errors import ProviderError, ValidationError
from tradeos_lab.symbols import Timeframe, validate_symbol

TimeLike = datetime | str
"""A bound of a request: a datetime or an ISO 8601 string; naive values are taken as UTC."""

RateLimiter = Callable[[], None]
"""Blocks until one more request may be sent (an in-process bucket or the flags-tier limiter)."""


@runtime_checkable
class BarProvider(Protocol):
    """A source of bars outside our stores: an exchange, a broker's API, a generator, a file."""

    @property
    def name(self) -> str:
        """Short lower-case name used in logs and metrics."""
        ...

    def fetch_bars(
        self, symbol: str, timeframe: Timeframe | str, start: TimeLike, end: TimeLike
    ) -> pd.DataFrame:
        """A validated bar frame of the bars opening in [start, end) (UTC), oldest first."""
        ...


class HttpProvider:
    """Providers that hold an HTTP session: usable as a context manager that closes it."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BarRequest:
    """A checked request: valid symbol and timeframe, UTC bounds, start before end."""

    __slots__ = ("end", "start", "symbol", "timeframe")

    def __init__(
        self, symbol: str, timeframe: Timeframe | str, start: TimeLike, end: TimeLike
    ) -> None:
        self.symbol = validate_symbol(symbol)
        self.timeframe = Timeframe.parse(timeframe)
        self.start = utc_timestamp(start, "start")
        self.end = utc_timestamp(end, "end")
        if self.start >= self.end:
            raise ValidationError(
                f"start {self.start.isoformat()} must be before end {self.end.isoformat()}"
            )

    @property
    def step(self) -> int:
        return self.timeframe.seconds

    @property
    def first_open(self) -> int:
        """Epoch seconds of the first bar opening at or after start."""
        return -(-int(self.start.timestamp()) // self.step) * self.step

    @property
    def last_open(self) -> int:
        """Epoch seconds of the last bar opening strictly before end (< first_open: no bar)."""
        end = self.end.timestamp()
        last = int(end // self.step) * self.step
        return last - self.step if last >= end else last

    def __repr__(self) -> str:
        return (
            f"BarRequest({self.symbol!r}, {self.timeframe.value!r}, "
            f"{self.start.isoformat()}, {self.end.isoformat()})"
        )


def finish(frame: pd.DataFrame, request: BarRequest, source: str) -> pd.DataFrame:
    """Keep [start, end), sort oldest first, and pass the bar gate.

    Bars from a remote source that fail validation are the source's fault, so they raise
    `ProviderError` naming the source rather than `ValidationError` (which tells the caller to fix
    their input).
    """
    try:
        bars = validate_bars(frame)
    except ValidationError as e:
        raise ProviderError(f"{source} returned bars that fail validation: {e}") from e
    inside = (bars["ts"] >= request.start) & (bars["ts"] < request.end)
    return bars.loc[inside].sort_values("ts", kind="stable").reset_index(drop=True)


class TokenBucket:
    """An in-process lazy-fill token bucket: `rate` requests per second, bursts of `capacity`.

    The same model Coinbase documents for its own limits, so staying inside it avoids 429s.
    Thread-safe; calling it blocks until a token is available.
    """

    def __init__(
        self,
        rate: float,
        capacity: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._tokens = capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    def __call__(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            self._sleep(wait)

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, capacity={self.capacity})"
