"""What the end-to-end and fault tests (and the pipeline benchmark) share: a strategy that trades
on every bar, bars that make it trade, and waiting on the bus.

`FlipFlop` is referenced by path (`STRATEGY_REF`), so service processes started by the
supervisor load the same class as a test's own threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from tradeos_lab import strategies as st
from tradeos_lab.contracts import Bar, Message, new_message

#: `path.py:Class` reference to `FlipFlop` for the `pipeline_strategies` setting.
STRATEGY_REF = f"{Path(__file__).resolve()}:FlipFlop"

T0 = datetime(2024, 1, 2, 0, 0, tzinfo=UTC)
T = TypeVar("T")


class FlipFlop(st.Strategy[st.StrategyParams]):
    """Long when the close rose since the last bar, short when it fell: on zig-zag bars it asks
    to trade on every bar, so every bar can be followed to a fill."""

    name = "flip_flop"
    lookback = 2

    def indicators(self) -> tuple[()]:
        return ()

    def rule(self, values: Any) -> Any:
        close = values["close"]
        before = st.previous(close)
        return st.choose(close > before, close < before)


def zigzag_bar(i: int, *, symbol: str = "BTC-USD", producer: str = "ingestion") -> Message:
    """Bar `i` of a 1m series whose close alternates 99 / 101 (100 +- 1), one minute apart."""
    price = 101.0 if i % 2 else 99.0
    payload = Bar(
        symbol=symbol,
        timeframe="1m",
        ts=T0 + timedelta(minutes=i),
        open=100.0,
        high=max(price, 100.0) + 0.5,
        low=min(price, 100.0) - 0.5,
        close=price,
        volume=1_000.0,
        source="synthetic",
    )
    return new_message(payload, producer=producer)


def wait_for(
    probe: Callable[[], T], *, timeout: float = 20.0, every: float = 0.05, what: str = ""
) -> T:
    """Poll `probe` until it returns something truthy; AssertionError naming `what` if never."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or probe}")
        time.sleep(every)
