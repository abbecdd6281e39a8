"""The bar gate: one bar (live path) and a frame of bars (batch path) obey the same rules."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeos_lab.bars import bar_span, utc_timestamp, validate_bar, validate_bars
from tradeos_lab.errors import ValidationError

GOOD = {
    "ts": pd.Timestamp("2025-03-03 14:35", tz="UTC"),
    "open": 100.0,
    "high": 101.0,
    "low": 99.5,
    "close": 100.5,
    "volume": 1200.0,
}

prices = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-5, max_value=200),
    st.sampled_from([0.0, -1.0, math.nan, math.inf]),
)


def _frame_verdict(bar: dict[str, Any]) -> tuple[bool, pd.DataFrame | None]:
    try:
        frame = validate_bars(pd.DataFrame([{"symbol": "AAPL", "timeframe": "5m", **bar}]))
    except ValidationError:
        return False, None
    return True, frame


@settings(max_examples=300, deadline=None)
@given(
    open_=prices,
    high=prices,
    low=prices,
    close=prices,
    volume=prices,
    minute=st.integers(min_value=0, max_value=59),
)
def test_one_bar_and_a_frame_of_it_get_the_same_verdict(
    open_: float, high: float, low: float, close: float, volume: float, minute: int
) -> None:
    bar = {
        "ts": pd.Timestamp("2025-03-03 14:00", tz="UTC") + pd.Timedelta(minutes=minute),
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": volume,
    }
    accepted, frame = _frame_verdict(bar)
    try:
        single = validate_bar("AAPL", "5m", bar)
    except ValidationError:
        assert not accepted, bar
        return
    assert accepted, bar
    assert frame is not None
    row = frame.iloc[0]
    for col in ("open", "high", "low", "close", "volume"):
        assert single[col] == row[col]
    assert single["ts"] == row["ts"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"open": True}, "must be a number"),
        ({"close": "100"}, "must be a number"),
        ({"high": 99.0}, "high < low|outside"),
        ({"ts": pd.Timestamp("2025-03-03 14:35:30", tz="UTC")}, "off the 1m grid"),
        ({"trade_count": -3}, "negative trade_count"),
        ({"trade_count": 2.5}, "must be an integer"),
        ({"bid": 1.0}, "unknown bar fields"),
    ],
)
def test_one_bad_bar_is_refused_with_the_reason(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_bar("AAPL", "1m", {**GOOD, **change})


def test_one_bar_is_normalised() -> None:
    bar = validate_bar(
        "AAPL", "1m", {**GOOD, "ts": "2025-03-03T14:35:00", "trade_count": np.int64(7)}
    )
    assert bar["ts"] == GOOD["ts"]
    assert bar["trade_count"] == 7
    assert math.isnan(bar["vwap"])
    with pytest.raises(ValidationError, match="not a ticker"):
        validate_bar("AAPL';--", "1m", GOOD)
    with pytest.raises(ValidationError, match="unknown timeframe"):
        validate_bar("AAPL", "2m", GOOD)


def test_duplicate_bars_are_found_in_one_series_and_across_series() -> None:
    ts = pd.date_range("2025-01-01", periods=4, freq="1min", tz="UTC")
    base = pd.DataFrame(
        {
            "symbol": "AAPL",
            "timeframe": "1m",
            "ts": ts,
            **{k: GOOD[k] for k in ("open", "high", "low", "close", "volume")},
        }
    )
    with pytest.raises(ValidationError, match="duplicate"):
        validate_bars(pd.concat([base, base.iloc[[1]]]))
    other = base.assign(symbol="MSFT")
    assert len(validate_bars(pd.concat([base, other]))) == 8
    with pytest.raises(ValidationError, match="duplicate"):
        validate_bars(pd.concat([base, other, other.iloc[[0]]]))
    unordered = validate_bars(base.iloc[[2, 0, 3, 1]])
    assert len(unordered) == 4


def test_a_span_is_utc_open_ended_and_ordered() -> None:
    lo, hi = bar_span("2025-01-01", None)
    assert lo == pd.Timestamp("2025-01-01", tz="UTC")
    assert hi.year == 2200
    with pytest.raises(ValidationError, match="after end"):
        bar_span("2025-01-02", "2025-01-01")
    with pytest.raises(ValidationError, match="must be a datetime"):
        utc_timestamp(True, "start")
    with pytest.raises(ValidationError, match="not a timestamp"):
        utc_timestamp("yesterday-ish", "start")
