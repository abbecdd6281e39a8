"""Bad input is refused with a ValidationError naming the problem, never a silent NaN column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tradeos_lab.indicators as ind
from tests.indicators.conftest import random_bars
from tradeos_lab.errors import ValidationError
from tradeos_lab.indicators import (
    ATR,
    EMA,
    MACD,
    RSI,
    SMA,
    ATRRegime,
    BBands,
    IndicatorSet,
    OpeningRange,
    SessionVWAP,
    VolumePercentile,
    compute,
)

ALL = IndicatorSet(
    [
        RSI(14),
        SMA(10),
        EMA(10),
        MACD(),
        BBands(),
        ATR(14),
        ATRRegime(14, 20),
        VolumePercentile(20),
        SessionVWAP(),
        OpeningRange(30),
    ]
)


def test_unsorted_timestamps_are_refused() -> None:
    bars = random_bars(100)
    swapped = bars.iloc[[*range(50), 51, 50, *range(52, 100)]].reset_index(drop=True)
    with pytest.raises(ValidationError, match="unsorted timestamps"):
        ALL.batch(swapped)


def test_duplicate_timestamps_are_refused() -> None:
    bars = random_bars(100)
    bars.loc[10, "ts"] = bars.loc[9, "ts"]
    with pytest.raises(ValidationError, match="duplicate timestamps"):
        RSI(14).batch(bars)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("column", ["high", "low", "close"])
def test_non_finite_prices_are_refused(column: str, bad: float) -> None:
    bars = random_bars(100)
    bars.loc[40, column] = bad
    spec = IndicatorSet([RSI(14), ATR(14), OpeningRange(30), SessionVWAP()])
    with pytest.raises(ValidationError, match=f"{column} has NaN or infinite"):
        spec.batch(bars)


def test_infinite_volume_is_refused() -> None:
    bars = random_bars(100)
    bars.loc[3, "volume"] = np.inf
    with pytest.raises(ValidationError, match="volume has infinite"):
        VolumePercentile(20).batch(bars)


@pytest.mark.parametrize(
    ("spec", "needed"),
    [(RSI(14), 15), (SMA(50), 50), (MACD(), 34), (ATR(14), 15), (ATRRegime(14, 100), 114)],
)
def test_a_window_longer_than_the_data_is_refused(spec, needed: int) -> None:
    with pytest.raises(ValidationError, match=f"needs at least {needed} bars, got {needed - 1}"):
        spec.batch(random_bars(needed - 1))
    spec.batch(random_bars(needed))


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValidationError, match=r"missing columns \['high', 'low'\]"):
        ATR(14).batch(random_bars(50).drop(columns=["high", "low"]))


@pytest.mark.parametrize(
    "make",
    [
        lambda: RSI(1),
        lambda: SMA(0),
        lambda: EMA(2.5),
        lambda: MACD(26, 12, 9),
        lambda: BBands(20, -1),
        lambda: ATRRegime(14, 100, low=0.8, high=0.2),
        lambda: VolumePercentile(0),
        lambda: SessionVWAP("NOWHERE"),
        lambda: OpeningRange(0),
    ],
)
def test_bad_parameters_are_refused(make) -> None:
    with pytest.raises(ValidationError):
        make()


def test_a_short_symbol_in_a_long_frame_is_named() -> None:
    long = pd.concat(
        [random_bars(100, symbol="AAA"), random_bars(5, symbol="BBB")], ignore_index=True
    )
    with pytest.raises(ValidationError, match="BBB: RSI"):
        compute(long, [RSI(14)])


def test_bars_before_the_calendar_are_refused() -> None:
    with pytest.raises(ValidationError, match="outside the XNYS calendar"):
        SessionVWAP("XNYS").batch(random_bars(10, start="1995-01-03 15:00"))


def test_incremental_refuses_out_of_order_bars_and_bad_prices() -> None:
    state = ALL.state()
    bars = random_bars(3)
    first = bars.iloc[1].to_dict()
    state.update(first)
    with pytest.raises(ValidationError, match="duplicate bar"):
        state.update(first)
    with pytest.raises(ValidationError, match="unsorted bar"):
        state.update(bars.iloc[0].to_dict())
    with pytest.raises(ValidationError, match="NaN or infinite price"):
        state.update({**bars.iloc[2].to_dict(), "close": float("nan")})


@pytest.mark.parametrize("row", [0, 5])
def test_missing_timestamps_are_refused(row: int) -> None:
    bars = random_bars(20)
    bars.loc[row, "ts"] = pd.NaT
    with pytest.raises(ValidationError, match="missing timestamps"):
        SMA(5).batch(bars)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("column", ["high", "low", "close"])
@pytest.mark.parametrize(
    "when",
    [
        "2024-07-05 12:00",  # pre-market: outside every session
        "2024-07-05 13:40",  # while the opening range forms
        "2024-07-05 16:00",  # in the session after it
        "2024-07-05 23:55",  # the last bar, after the close
    ],
)
@pytest.mark.parametrize("spec", [SessionVWAP("XNYS"), OpeningRange(30, "XNYS")])
def test_session_indicators_name_the_column_and_row_of_a_non_finite_price(
    spec, when: str, column: str, bad: float
) -> None:
    bars = random_bars(24 * 12, start="2024-07-05 00:00", freq="5min")
    row = int(np.flatnonzero(bars["ts"] == pd.Timestamp(when, tz="UTC"))[0])
    bars.loc[row, column] = bad
    with pytest.raises(
        ValidationError, match=rf"{column} has NaN or infinite values \(the first at row {row}\)"
    ):
        spec.batch(bars)


def test_session_kernels_refuse_columns_of_different_lengths() -> None:
    bars = random_bars(50)
    ts, h, lo, c, v = (bars[k] for k in ("ts", "high", "low", "close", "volume"))
    with pytest.raises(ValidationError, match="different lengths"):
        ind.session_vwap(ts, h, lo, c.iloc[:-1], v)
    with pytest.raises(ValidationError, match="different lengths"):
        ind.opening_range(ts.iloc[:-1], h, lo, c, minutes=30)


@pytest.mark.parametrize("column", ["high", "low", "close"])
@pytest.mark.parametrize("row", [0, 10, 199])
def test_atr_regime_names_the_column_and_row_of_a_non_finite_price(column: str, row: int) -> None:
    bars = random_bars(200)
    bars.loc[row, column] = np.nan
    with pytest.raises(
        ValidationError, match=rf"{column} has NaN or infinite values \(the first at row {row}\)"
    ):
        ATRRegime(14, 20).batch(bars)
