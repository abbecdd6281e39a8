"""Bars for the strategy tests: the bundled equity sample and seeded synthetic bars."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tradeos_lab.providers import SyntheticProvider, read_bar_file

SAMPLE = Path(__file__).with_name("data") / "sample_5m_xnys.csv"


@pytest.fixture(scope="session")
def sample_bars() -> pd.DataFrame:
    """Two weeks of 5-minute bars in NYSE hours (generated, see data/make_sample.py)."""
    return read_bar_file(SAMPLE, symbol="SAMPLE", timeframe="5m")


@pytest.fixture(scope="session")
def generated_bars() -> pd.DataFrame:
    """Two days of 1-minute bars around the clock from the synthetic provider, gaps included."""
    start = pd.Timestamp("2025-06-02", tz="UTC")
    return SyntheticProvider(seed=11).fetch_bars("BTC-USD", "1m", start, start + pd.Timedelta("2D"))


@pytest.fixture(scope="session")
def two_symbols() -> pd.DataFrame:
    """One day of 5-minute bars of two symbols with different gaps: a long multi-symbol frame."""
    start = pd.Timestamp("2025-06-02", tz="UTC")
    provider = SyntheticProvider(seed=5, gap_rate=0.02)
    return pd.concat(
        [
            provider.fetch_bars(symbol, "5m", start, start + pd.Timedelta("2D"))
            for symbol in ("AAA", "BBB")
        ],
        ignore_index=True,
    )
