"""Helpers shared by the lake tests: realistic bars, raw table counts, the server switch."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import pytest

from tradeos_lab.stores.lake import Lake
from tradeos_lab.stores.lake.server_backend import ClickHouseServerBackend
from tradeos_lab.symbols import Timeframe

CLICKHOUSE_URL = os.environ.get("TRADEOS_TEST_CLICKHOUSE_URL")
NO_SERVER = "TRADEOS_TEST_CLICKHOUSE_URL is not set: no ClickHouse server to test against"

# Recent enough that no tier's default retention (730 days for 1m) drops the test bars.
ANCHOR = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=20)).floor("D")


def make_bars(
    symbol: str = "AAPL",
    timeframe: str = "1m",
    start: pd.Timestamp | str | None = None,
    periods: int = 120,
    seed: int = 0,
    *,
    vwap: bool = True,
    trade_count: bool = True,
) -> pd.DataFrame:
    """Realistic bars: each opens at the previous close, high/low around the body."""
    step = pd.Timedelta(seconds=Timeframe.parse(timeframe).seconds)
    first = ANCHOR if start is None else pd.Timestamp(start)
    first = first.tz_localize("UTC") if first.tzinfo is None else first
    rng = np.random.default_rng(seed)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, periods)))
    opens = np.concatenate([[100.0], closes[:-1]])
    highs = np.maximum(opens, closes) * (1 + rng.uniform(0, 0.002, periods))
    lows = np.minimum(opens, closes) * (1 - rng.uniform(0, 0.002, periods))
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "timeframe": timeframe,
            "ts": pd.date_range(first, periods=periods, freq=step),
            "open": opens,
            "high": highs,
            "low": lows,
            "close": closes,
            "volume": rng.uniform(10, 1000, periods).round(2),
        }
    )
    frame["vwap"] = lows + (highs - lows) * rng.uniform(0.2, 0.8, periods) if vwap else np.nan
    frame["trade_count"] = (
        pd.array(rng.integers(1, 50, periods), dtype="Int64")
        if trade_count
        else pd.array([pd.NA] * periods, dtype="Int64")
    )
    return frame


def table_counts(lake: Lake) -> dict[str, int]:
    """Raw row counts of every lake table (no FINAL): proves a rejected write wrote nothing."""
    frame = lake.query(
        "SELECT name, total_rows FROM system.tables "
        "WHERE database = currentDatabase() AND (name LIKE 'bars\\_%' OR name = 'gap_ledger')"
    )
    return {str(n): int(r or 0) for n, r in zip(frame["name"], frame["total_rows"], strict=True)}


def server_lake_for(url: str) -> Lake:
    """A lake on the ClickHouse server at `url`, in a fresh database of its own."""
    database = f"tradeos_test_{uuid.uuid4().hex[:12]}"
    admin = ClickHouseServerBackend(url)
    try:
        admin.command(f"CREATE DATABASE {database}", {})
    finally:
        admin.close()
    parts = urlsplit(url)
    return Lake(
        ClickHouseServerBackend(
            urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))
        )
    )


def drop_server_lake(lake: Lake) -> None:
    """Drop the test database of a lake made by `server_lake_for`, then close it."""
    try:
        database = str(lake.query("SELECT currentDatabase() AS db")["db"].iloc[0])
        if database.startswith("tradeos_test_"):
            lake.command(f"DROP DATABASE IF EXISTS {database}")
    finally:
        lake.close()


# Tier -> pandas resample rule.
RULES = {"5m": "5min", "15m": "15min", "1h": "1h", "1d": "1D"}


def pandas_rollup(bars: pd.DataFrame, rule: str) -> pd.DataFrame:
    """The reference: first open, max high, min low, last close, summed volume and trade count,
    vwap weighted by the volume of the bars that carry one."""
    frames = []
    for symbol, rows in bars.groupby("symbol"):
        f = rows.set_index("ts").sort_index()
        known = f["vwap"].notna()
        r = f.resample(rule, label="left", closed="left")
        out = pd.DataFrame(
            {
                "open": r["open"].first(),
                "high": r["high"].max(),
                "low": r["low"].min(),
                "close": r["close"].last(),
                "volume": r["volume"].sum(),
                "vwap": (f["vwap"] * f["volume"]).where(known).resample(rule).sum()
                / f["volume"].where(known).resample(rule).sum(),
                "trade_count": r["trade_count"].sum(min_count=1),
            }
        )
        out = out[r["open"].count() > 0]
        out.insert(0, "symbol", symbol)
        frames.append(out.reset_index())
    return pd.concat(frames, ignore_index=True)


def assert_same_bars(got: pd.DataFrame, want: pd.DataFrame) -> None:
    got = got.reset_index(drop=True)
    want = want.reset_index(drop=True)
    assert list(got["ts"]) == list(want["ts"])
    for col in ("open", "high", "low", "close", "volume", "vwap"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-12, err_msg=col)
    assert got["trade_count"].astype("float64").tolist() == pytest.approx(
        want["trade_count"].astype("float64").tolist(), nan_ok=True
    )
