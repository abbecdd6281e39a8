"""The lake's SQL features and these indicators on the same bars (embedded chdb lake).

- Volume percentile: the same rule (mid-rank among the last N bars, itself included): equal.
- Opening range breakout on XNYS regular sessions: the same range and the same first breakout.
  The lake takes every local calendar day with bars as a session between fixed local times; the
  indicator takes the exchange calendar, so they differ on holidays (the lake makes a session of
  any bars there) and on early closes (the lake keeps its fixed close). Tested on regular days.
- ATR regime: the same percentile and thresholds, but a different ATR: the lake averages the
  true ranges of the last `window` bars (a simple mean; the first bar's true range is its
  high - low), the indicator uses Wilder's ATR as TA-Lib does, so the cache and the strategies
  agree with TA-Lib. The test proves the lake's ATR is exactly that simple mean and that,
  given the lake's ATR, the percentile and regime rule agree exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pytest
import talib

from tradeos_lab.indicators import OpeningRange, VolumePercentile, rolling_percentile
from tradeos_lab.indicators.sessions import sessions
from tradeos_lab.settings import Settings
from tradeos_lab.stores.lake import Lake

# Recent enough that the lake's 1m retention (730 days) keeps the bars.
TODAY = pd.Timestamp.now(tz="UTC").floor("D")


@pytest.fixture
def lake(settings_factory: Callable[..., Settings]) -> Iterator[Lake]:
    with Lake.open(settings_factory()) as opened:
        yield opened


def walk(ts: pd.DatetimeIndex, seed: int, symbol: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(ts)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    return pd.DataFrame(
        {
            "symbol": symbol,
            "timeframe": "1m",
            "ts": ts,
            "open": open_,
            "high": (np.maximum(open_, close) * (1 + rng.uniform(0, 0.002, n))).round(4),
            "low": (np.minimum(open_, close) * (1 - rng.uniform(0, 0.002, n))).round(4),
            "close": close.round(4),
            "volume": rng.integers(1, 50, n).astype(float),  # ties: mid-ranks matter
        }
    ).assign(
        open=lambda f: f["open"].clip(f["low"], f["high"]),
        close=lambda f: f["close"].clip(f["low"], f["high"]),
    )


def test_volume_percentile_equals_the_lakes(lake: Lake) -> None:
    bars = walk(pd.date_range(TODAY - pd.Timedelta(days=3), periods=600, freq="1min"), 1, "AAA")
    lake.write_bars(bars)
    got = lake.volume_percentile("AAA", "1m", lookback=50)
    ours = VolumePercentile(50).batch(bars)["volume_pct_50"]
    np.testing.assert_allclose(got["volume_pct"], ours, rtol=1e-12, equal_nan=True)


def test_atr_regime_rule_equals_the_lakes_given_its_simple_mean_atr(lake: Lake) -> None:
    bars = walk(pd.date_range(TODAY - pd.Timedelta(days=3), periods=600, freq="1min"), 2, "AAA")
    lake.write_bars(bars)
    window, lookback = 14, 50
    got = lake.atr_regime("AAA", "1m", window=window, lookback=lookback)
    h, lo, c = (bars[k].to_numpy() for k in ("high", "low", "close"))
    true_range = talib.TRANGE(h, lo, c)
    true_range[0] = h[0] - lo[0]
    np.testing.assert_allclose(got["atr"], talib.SMA(true_range, window), rtol=1e-9)
    # the lake ranks only defined ATRs, as ATRRegime does
    pct = np.full(len(bars), np.nan)
    pct[window - 1 :] = rolling_percentile(got["atr"].to_numpy()[window - 1 :], lookback)
    np.testing.assert_allclose(got["atr_pct"], pct, rtol=1e-12, equal_nan=True)
    labels = np.where(pct <= 0.25, "low", np.where(pct >= 0.75, "high", "normal"))
    assert got["regime"].tolist() == [
        None if np.isnan(p) else s for p, s in zip(pct, labels, strict=True)
    ]


def _first_breakouts(bars: pd.DataFrame, ours: pd.DataFrame, prefix: str) -> pd.DataFrame:
    code = ours[f"or_breakout_{prefix}"]
    hits = bars.assign(code=code)[code.fillna(0) != 0]
    first = hits.groupby(hits["session"]).first()
    return pd.DataFrame(
        {
            "breakout": np.where(first["code"] > 0, "up", "down"),
            "breakout_ts": first["ts"],
            "breakout_close": first["close"],
        },
        index=first.index,
    )


def test_opening_range_breakout_equals_the_lakes_on_regular_xnys_sessions(lake: Lake) -> None:
    book = sessions("XNYS")
    schedule = pd.DataFrame(
        {
            "open": pd.to_datetime(book.opens, utc=True),
            "close": pd.to_datetime(book.closes, utc=True),
        }
    )
    recent = schedule[
        (schedule["open"] >= TODAY - pd.Timedelta(days=30)) & (schedule["close"] < TODAY)
    ]
    regular = recent[(recent["close"] - recent["open"]) == pd.Timedelta(hours=6, minutes=30)]
    minutes = [
        pd.date_range(start, end, freq="1min", inclusive="left")
        for start, end in zip(regular["open"].tail(4), regular["close"].tail(4), strict=True)
    ]
    ts = minutes[0].append(minutes[1:])
    bars = walk(ts, 3, "SPY")
    lake.write_bars(bars)
    got = lake.opening_range_breakout(
        "SPY", "1m", range_minutes=30, session_open="09:30", session_close="16:00",
        tz="America/New_York",
    )  # fmt: skip
    ours = OpeningRange(30, "XNYS").batch(bars)
    bars = bars.assign(session=bars["ts"].dt.tz_convert("America/New_York").dt.date)
    after = ours["or_high_30_xnys"].notna()
    ranges = ours[after].groupby(bars.loc[after, "session"]).first()
    assert [str(s) for s in got["session"]] == [str(s) for s in ranges.index]
    np.testing.assert_array_equal(got["or_high"], ranges["or_high_30_xnys"])
    np.testing.assert_array_equal(got["or_low"], ranges["or_low_30_xnys"])
    assert (got["range_bars"] == 30).all()
    expected = _first_breakouts(bars, ours, "30_xnys").reindex(ranges.index)
    assert expected["breakout"].notna().sum() >= 2  # the walk breaks out on most days
    assert got["breakout"].tolist() == [
        x if isinstance(x, str) else None for x in expected["breakout"]
    ]
    for lake_ts, our_ts in zip(got["breakout_ts"], expected["breakout_ts"], strict=True):
        assert (lake_ts is None and pd.isna(our_ts)) or pd.Timestamp(lake_ts) == our_ts
    np.testing.assert_array_equal(
        [np.nan if x is None else x for x in got["breakout_close"]], expected["breakout_close"]
    )
