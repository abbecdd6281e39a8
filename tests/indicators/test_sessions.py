"""Session VWAP and opening range follow the market calendar: holidays, early closes, 24/7."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.indicators.conftest import random_bars
from tradeos_lab.indicators import IndicatorSet, OpeningRange, SessionVWAP

# 2024-07-03 closes early (13:00 New York = 17:00 UTC), 2024-07-04 is a holiday, 07-05 is regular.
BARS = random_bars(3 * 24 * 12, start="2024-07-03 00:00", freq="5min", seed=7)
NYSE = IndicatorSet([SessionVWAP("XNYS"), OpeningRange(30, "XNYS")])


def _at(frame: pd.DataFrame, when: str) -> pd.Series:
    return frame.loc[BARS["ts"] == pd.Timestamp(when, tz="UTC")].iloc[0]


def test_xnys_values_exist_only_inside_regular_hours() -> None:
    out = NYSE.batch(BARS)
    ts = BARS["ts"]
    open_0703, close_0703 = (
        pd.Timestamp("2024-07-03 13:30", tz="UTC"),
        pd.Timestamp("2024-07-03 17:00", tz="UTC"),
    )
    open_0705, close_0705 = (
        pd.Timestamp("2024-07-05 13:30", tz="UTC"),
        pd.Timestamp("2024-07-05 20:00", tz="UTC"),
    )
    inside = ((ts >= open_0703) & (ts < close_0703)) | ((ts >= open_0705) & (ts < close_0705))
    assert out.loc[inside, "vwap_xnys"].notna().all()
    assert out.loc[~inside, "vwap_xnys"].isna().all()  # pre-market, after the early close, holiday
    assert out.loc[ts.dt.day == 4].isna().all().all()


def test_session_vwap_restarts_at_each_session_open() -> None:
    out = NYSE.batch(BARS)
    first = BARS.loc[BARS["ts"] == pd.Timestamp("2024-07-05 13:30", tz="UTC")].iloc[0]
    typical = (first["high"] + first["low"] + first["close"]) / 3
    assert _at(out, "2024-07-05 13:30")["vwap_xnys"] == pytest.approx(typical, rel=1e-12)


def test_opening_range_is_the_first_minutes_and_breakouts_compare_closes() -> None:
    out = NYSE.batch(BARS)
    ts = BARS["ts"]
    window = (ts >= pd.Timestamp("2024-07-05 13:30", tz="UTC")) & (
        ts < pd.Timestamp("2024-07-05 14:00", tz="UTC")
    )
    assert out.loc[window, "or_high_30_xnys"].isna().all()  # still forming
    after = (ts >= pd.Timestamp("2024-07-05 14:00", tz="UTC")) & (
        ts < pd.Timestamp("2024-07-05 20:00", tz="UTC")
    )
    top, bottom = BARS.loc[window, "high"].max(), BARS.loc[window, "low"].min()
    assert (out.loc[after, "or_high_30_xnys"] == top).all()
    assert (out.loc[after, "or_low_30_xnys"] == bottom).all()
    close = BARS.loc[after, "close"]
    expected = np.where(close > top, 1.0, np.where(close < bottom, -1.0, 0.0))
    np.testing.assert_array_equal(out.loc[after, "or_breakout_30_xnys"], expected)


def test_24_7_sessions_are_utc_days() -> None:
    out = IndicatorSet([SessionVWAP(), OpeningRange(60)]).batch(BARS)
    assert out["vwap_24_7"].notna().all()
    midnight = BARS["ts"].dt.hour.eq(0) & BARS["ts"].dt.minute.eq(0)
    row = BARS.loc[midnight].iloc[1]
    typical = (row["high"] + row["low"] + row["close"]) / 3
    assert out.loc[row.name, "vwap_24_7"] == pytest.approx(typical, rel=1e-12)
    first_hour = BARS["ts"].dt.hour.eq(0)
    assert out.loc[first_hour, "or_high_60_24_7"].isna().all()
    assert out.loc[~first_hour, "or_high_60_24_7"].notna().all()


def test_check_calendar_accepts_known_calendars_and_names_unknown_ones() -> None:
    from tradeos_lab.errors import ValidationError
    from tradeos_lab.indicators import check_calendar

    assert check_calendar("XNYS") == "XNYS"
    assert check_calendar("24/7") == "24/7"
    with pytest.raises(ValidationError, match="unknown market calendar 'XXXX'"):
        check_calendar("XXXX")


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
def test_session_indicators_read_bar_times_in_any_resolution(unit: str) -> None:
    # 37-second bars cross session opens, closes and the holiday at odd offsets; the kernels
    # read the times in their own resolution, so every one must give the nanosecond values
    bars = random_bars(3 * 24 * 97, start="2024-07-03 00:00:13", freq="37s", seed=3)
    specs = IndicatorSet([SessionVWAP("XNYS"), OpeningRange(30, "XNYS"), SessionVWAP()])
    in_ns = bars.assign(ts=bars["ts"].dt.as_unit("ns"))
    expected = specs.batch(in_ns)
    assert expected["vwap_xnys"].notna().any() and expected["vwap_xnys"].isna().any()
    got = specs.batch(bars.assign(ts=bars["ts"].dt.as_unit(unit)))
    pd.testing.assert_frame_equal(got, expected)
