"""Signal-enrichment features computed in SQL, on hand-built bars whose answers are known."""

from __future__ import annotations

import math
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from lake_helpers import ANCHOR

from tradeos_lab.stores.lake import Lake

MIN = pd.Timedelta(minutes=1)
NAN = math.nan


def flat_bars(ranges: list[float], symbol: str = "AAPL") -> pd.DataFrame:
    """Bars all closing at 100, each `range` wide around it, so true range == high - low."""
    n = len(ranges)
    return pd.DataFrame(
        {
            "symbol": symbol,
            "timeframe": "1m",
            "ts": pd.date_range(ANCHOR, periods=n, freq="1min"),
            "open": 100.0,
            "high": [100 + r / 2 for r in ranges],
            "low": [100 - r / 2 for r in ranges],
            "close": 100.0,
            "volume": 1.0,
        }
    )


def same(got: list[float], want: list[float]) -> bool:
    return got == pytest.approx(want, nan_ok=True)


def test_true_range_counts_the_gap_from_the_previous_close(lake: Lake) -> None:
    bars = flat_bars([1.0, 1.0])
    gapped = pd.DataFrame(
        {
            "symbol": "AAPL",
            "timeframe": "1m",
            "ts": [ANCHOR + 2 * MIN, ANCHOR + 3 * MIN],
            "open": [105.2, 104.0],
            "high": [106.0, 104.5],
            "low": [105.0, 101.0],
            "close": [105.5, 102.0],
            "volume": 1.0,
        }
    )
    lake.write_bars(pd.concat([bars, gapped]))

    got = lake.atr_regime("AAPL", "1m", window=2, lookback=1)

    # up-gap: high - previous close = 6; then previous close - low = 4.5
    assert got["tr"].tolist() == pytest.approx([1.0, 1.0, 6.0, 4.5])
    assert same(got["atr"].tolist(), [NAN, 1.0, 3.5, 5.25])


def test_atr_regime_classifies_by_the_atr_percentile(any_lake: Lake) -> None:
    any_lake.write_bars(flat_bars([1, 1, 1, 1, 3, 3, 1, 1, 0.5, 0.5]))

    got = any_lake.atr_regime("AAPL", "1m", window=2, lookback=3)

    assert list(got.columns) == ["symbol", "ts", "tr", "atr", "atr_pct", "regime"]
    assert same(got["atr"].tolist(), [NAN, 1, 1, 1, 2, 3, 2, 1, 0.75, 0.5])
    assert same(
        got["atr_pct"].tolist(),
        [NAN, NAN, NAN, 0.5, 2.5 / 3, 2.5 / 3, 1 / 3, 0.5 / 3, 0.5 / 3, 0.5 / 3],
    )
    assert got["regime"].tolist() == [
        None, None, None, "normal", "high", "high", "normal", "low", "low", "low",
    ]  # fmt: skip


def test_features_warm_up_on_bars_before_start(lake: Lake) -> None:
    lake.write_bars(flat_bars([1, 1, 1, 1, 3, 3, 1, 1, 0.5, 0.5]))

    full = lake.atr_regime("AAPL", "1m", window=2, lookback=3)
    late = lake.atr_regime("AAPL", "1m", ANCHOR + 5 * MIN, window=2, lookback=3)
    window = lake.atr_regime("AAPL", "1m", ANCHOR + 5 * MIN, ANCHOR + 7 * MIN, window=2, lookback=3)

    pd.testing.assert_frame_equal(late, full.iloc[5:].reset_index(drop=True))
    pd.testing.assert_frame_equal(window, full.iloc[5:7].reset_index(drop=True))


def test_volume_percentile_ranks_each_bar_among_the_lookback_window(any_lake: Lake) -> None:
    bars = flat_bars([1.0] * 8)
    bars["volume"] = [10.0, 20, 30, 40, 5, 40, 40, 25]
    any_lake.write_bars(bars)

    got = any_lake.volume_percentile("AAPL", "1m", lookback=4)

    assert list(got.columns) == ["symbol", "ts", "volume", "volume_pct"]
    assert same(got["volume_pct"].tolist(), [NAN, NAN, NAN, 0.875, 0.125, 0.75, 0.625, 0.375])


def session_bars(day: pd.Timestamp, spec: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    """Minute bars 09:00-11:59 New York time on `day`; `spec` overrides (high, low, close) of
    some local minutes 'HH:MM'; the rest are quiet bars: high 100.5, low 99.5, close 100."""
    tz = ZoneInfo("America/New_York")
    local = pd.date_range(day.replace(hour=9, minute=0), periods=180, freq="1min", tz=tz)
    rows = []
    for ts in local:
        high, low, close = spec.get(ts.strftime("%H:%M"), (100.5, 99.5, 100.0))
        rows.append({"ts": ts.tz_convert("UTC"), "high": high, "low": low, "close": close})
    frame = pd.DataFrame(rows)
    frame["open"] = frame["close"]
    frame["symbol"] = "SPY"
    frame["timeframe"] = "1m"
    frame["volume"] = 100.0
    return frame


def test_opening_range_breakout_finds_the_first_close_outside_the_range(any_lake: Lake) -> None:
    day1 = pd.Timestamp(ANCHOR.date())
    day2, day3 = day1 + pd.Timedelta(days=1), day1 + pd.Timedelta(days=2)
    pre_open_spike = {"09:05": (150.0, 50.0, 100.0)}  # before the open: not part of the range
    bars = pd.concat(
        [
            session_bars(
                day1,
                {
                    **pre_open_spike,
                    "09:45": (101.5, 98.7, 100.0),
                    "10:10": (101.5, 100.0, 101.4),  # inside the range: no breakout
                    "10:17": (101.7, 100.0, 101.6),  # first close above 101.5
                    "10:20": (100.0, 90.0, 95.0),  # later down move: not the first breakout
                },
            ),
            session_bars(day2, {"10:40": (100.0, 98.0, 99.0)}),  # close 99 < 99.5
            session_bars(day3, {"11:15": (103.0, 100.0, 102.0)}),  # after the 10:30 close
        ]
    )
    any_lake.write_bars(bars)

    got = any_lake.opening_range_breakout(
        "SPY", "1m", range_minutes=30, session_open="09:30", tz="America/New_York"
    )
    closed_early = any_lake.opening_range_breakout(
        "SPY", "1m", range_minutes=30, session_open="09:30", session_close="11:00",
        tz="America/New_York",
    )  # fmt: skip

    ny = ZoneInfo("America/New_York")
    assert list(got.columns) == [
        "symbol", "session", "range_bars", "or_high", "or_low",
        "breakout", "breakout_ts", "breakout_close",
    ]  # fmt: skip
    assert [str(s) for s in got["session"]] == [str(d.date()) for d in (day1, day2, day3)]
    assert got["range_bars"].tolist() == [30, 30, 30]
    assert got["or_high"].tolist() == [101.5, 100.5, 100.5]
    assert got["or_low"].tolist() == [98.7, 99.5, 99.5]
    assert got["breakout"].tolist() == ["up", "down", "up"]
    assert got["breakout_close"].tolist() == [101.6, 99.0, 102.0]
    assert pd.Timestamp(got["breakout_ts"].iloc[0]) == pd.Timestamp(
        day1.replace(hour=10, minute=17)
    ).tz_localize(ny).tz_convert("UTC")
    assert closed_early["breakout"].tolist() == ["up", "down", None]
    assert closed_early["breakout_ts"].iloc[2] is None
