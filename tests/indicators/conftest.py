"""Bar frames for the indicator tests: a seeded random walk with realistic OHLCV."""

from __future__ import annotations

import numpy as np
import pandas as pd


def random_bars(
    n: int,
    *,
    seed: int = 0,
    start: str = "2024-01-02 14:30",
    freq: str = "1min",
    symbol: str | None = None,
) -> pd.DataFrame:
    """`n` one-minute bars of a geometric random walk; high/low bracket open and close."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.002, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.002, n))
    frame = pd.DataFrame(
        {
            "ts": pd.date_range(start, periods=n, freq=freq, tz="UTC"),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.integers(1, 1000, n).astype(float),
        }
    )
    if symbol is not None:
        frame.insert(0, "symbol", symbol)
    return frame
