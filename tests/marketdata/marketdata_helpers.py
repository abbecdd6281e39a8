"""Helpers for the market-data tests: a fixed clock, a counting synthetic provider and the fake
provider server with arrival times. The only doubles are at the process edge: `CountingSynthetic`
is the real synthetic provider with a request log; `TimedProviderServer` is the fake Coinbase and
Alpaca HTTP server of `tests/providers/provider_servers.py`.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "providers"))

from provider_servers import ProviderServer

from tradeos_lab.providers import SyntheticProvider
from tradeos_lab.providers.base import TimeLike
from tradeos_lab.symbols import Timeframe

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"
# A fixed "now" a day back from the real one, half-way through an hour: within every lake
# retention, and every read is deterministic.
NOW = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=1) + pd.Timedelta(minutes=30)


def clock() -> pd.Timestamp:
    return NOW


class CountingSynthetic(SyntheticProvider):
    """The real synthetic provider, recording every request (symbol, timeframe, start, end)."""

    def __init__(self, seed: int = 11, **kwargs: Any) -> None:
        kwargs.setdefault("gap_rate", 0.0)
        kwargs.setdefault("outage_rate", 0.0)
        super().__init__(seed, **kwargs)
        self.calls: list[tuple[str, str, pd.Timestamp, pd.Timestamp]] = []
        self._lock = threading.Lock()

    def fetch_bars(
        self, symbol: str, timeframe: Timeframe | str, start: TimeLike, end: TimeLike
    ) -> pd.DataFrame:
        with self._lock:
            self.calls.append(
                (symbol, Timeframe.parse(timeframe).value, pd.Timestamp(start), pd.Timestamp(end))
            )
        return super().fetch_bars(symbol, timeframe, start, end)


class TimedProviderServer(ProviderServer):
    """The fake Coinbase/Alpaca server, also noting when each candle request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.coinbase_products |= {"SOL-USD", "ADA-USD", "XRP-USD", "LTC-USD", "DOT-USD"}
        self.arrivals: list[tuple[float, str, dict[str, str]]] = []

    def coinbase(self, product: str, query: dict[str, str]) -> tuple[int, Any]:
        with self._lock:
            self.arrivals.append((time.time(), product, dict(query)))
        return super().coinbase(product, query)


def hours_before(end: pd.Timestamp, n: int) -> pd.Timestamp:
    return end - pd.Timedelta(hours=n)


def last_completed(timeframe: str, now: datetime = NOW) -> pd.Timestamp:
    """Open of the last completed bar at `now`."""
    step = pd.Timedelta(seconds=Timeframe.parse(timeframe).seconds)
    return pd.Timestamp(now).floor(step) - step
