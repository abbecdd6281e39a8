"""Bars the benchmarks share: many one-minute bars over several symbols, ending today (inside
every lake tier's retention), reproducible from a seed."""

from __future__ import annotations

import numpy as np
import pandas as pd


def bar_frame(n: int, symbols: int, seed: int = 1) -> pd.DataFrame:
    """`n` one-minute bars over `symbols` symbols, ending today."""
    per = n // symbols
    end = pd.Timestamp.now(tz="UTC").floor("D")
    ts = pd.date_range(end=end, periods=per, freq="1min")
    rng = np.random.default_rng(seed)
    size = per * symbols
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, size)))
    spread = close * rng.uniform(0, 0.002, size)
    return pd.DataFrame(
        {
            "symbol": np.repeat([f"SYM{i:03d}" for i in range(symbols)], per),
            "timeframe": "1m",
            "ts": np.tile(ts, symbols),
            "open": close,
            "high": close + spread,
            "low": close - spread,
            "close": close,
            "volume": rng.uniform(0, 1000, size),
            "vwap": close + spread * rng.uniform(-0.5, 0.5, size),
            "trade_count": rng.integers(0, 100, size),
        }
    )
