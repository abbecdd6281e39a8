"""Bars and records for the research tests: seeded synthetic bars, a records store per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tradeos_lab.providers import SyntheticProvider
from tradeos_lab.stores.records import RecordsStore

START = pd.Timestamp("2025-06-02", tz="UTC")


def synthetic_bars(symbols: tuple[str, ...], timeframe: str, days: int, seed: int) -> pd.DataFrame:
    provider = SyntheticProvider(seed=seed, gap_rate=0.02)
    return pd.concat(
        [
            provider.fetch_bars(s, timeframe, START, START + pd.Timedelta(days=days))
            for s in symbols
        ],
        ignore_index=True,
    )


@pytest.fixture(scope="session")
def one_symbol() -> pd.DataFrame:
    """Ten days of 5-minute bars of one symbol, gaps included."""
    return synthetic_bars(("AAA",), "5m", 10, seed=5)


@pytest.fixture(scope="session")
def two_symbols() -> pd.DataFrame:
    """Ten days of 5-minute bars of two symbols with different gaps."""
    return synthetic_bars(("AAA", "BBB"), "5m", 10, seed=5)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def records(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordsStore]:
    """A migrated records store on the embedded SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'records.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    store = RecordsStore.from_url(url)
    store.upgrade()
    yield store
    store.close()
