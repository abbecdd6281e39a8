"""Batch indicators: TA-Lib's values, the declared outputs and warm-ups, many symbols."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

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
    indicator_from_dict,
)

BARS = random_bars(600)
C = BARS["close"].to_numpy()
H = BARS["high"].to_numpy()
L = BARS["low"].to_numpy()

TALIB_CASES = [
    (RSI(14), [talib.RSI(C, 14)]),
    (RSI(9), [talib.RSI(C, 9)]),
    *[(SMA(p), [talib.SMA(C, p)]) for p in (10, 20, 50, 200)],
    *[(EMA(p), [talib.EMA(C, p)]) for p in (10, 20, 50)],
    (MACD(12, 26, 9), list(talib.MACD(C, 12, 26, 9))),
    (BBands(20, 2.0), list(talib.BBANDS(C, 20, 2.0, 2.0, 0))),
    (ATR(14), [talib.ATR(H, L, C, 14)]),
]


@pytest.mark.parametrize(("spec", "expected"), TALIB_CASES, ids=lambda x: getattr(x, "name", ""))
def test_batch_values_equal_talib_after_warmup(spec, expected) -> None:
    frame = spec.batch(BARS)
    assert list(frame.columns) == list(spec.outputs)
    assert frame.index.equals(BARS.index)
    for column, reference in zip(spec.outputs, expected, strict=True):
        got = frame[column].to_numpy()
        np.testing.assert_allclose(got[spec.warmup :], reference[spec.warmup :], rtol=1e-9)
        assert np.isnan(got[: spec.warmup]).all()
        assert not np.isnan(got[spec.warmup :]).any()


def test_output_names_follow_the_documented_scheme() -> None:
    assert RSI(14).outputs == ("rsi_14",)
    assert SMA(50).name == "sma_50"
    assert EMA(20).name == "ema_20"
    assert ATR(14).name == "atr_14"
    assert MACD().outputs == ("macd_12_26_9", "macd_signal_12_26_9", "macd_hist_12_26_9")
    assert BBands(20, 2).outputs == ("bb_upper_20_2", "bb_middle_20_2", "bb_lower_20_2")
    assert VolumePercentile(50).name == "volume_pct_50"
    assert SessionVWAP("XNYS").name == "vwap_xnys"
    assert SessionVWAP().name == "vwap_24_7"
    assert OpeningRange(30, "XNYS").outputs == (
        "or_high_30_xnys",
        "or_low_30_xnys",
        "or_breakout_30_xnys",
    )


def test_kernels_take_series_and_keep_their_index() -> None:
    close = pd.Series(C, index=pd.RangeIndex(1000, 1600))
    out = ind.rsi(close, 14)
    assert isinstance(out, pd.Series)
    assert out.index.equals(close.index)
    np.testing.assert_array_equal(out.to_numpy(), talib.RSI(C, 14))
    assert all(isinstance(part, np.ndarray) for part in ind.macd(C))


def test_indicator_set_batch_is_each_spec_side_by_side() -> None:
    specs = IndicatorSet([RSI(14), MACD(), ATR(14)])
    frame = specs.batch(BARS)
    assert list(frame.columns) == list(specs.outputs)
    assert specs.warmup == MACD().warmup
    pd.testing.assert_frame_equal(frame[["rsi_14"]], RSI(14).batch(BARS))


def test_long_frame_is_computed_per_symbol() -> None:
    a, b = random_bars(300, seed=1, symbol="AAA"), random_bars(200, seed=2, symbol="BBB")
    long = pd.concat([a, b], ignore_index=True)
    out = compute(long, [RSI(14), ATR(14)])
    assert isinstance(out, pd.DataFrame)
    assert out.index.equals(long.index)
    np.testing.assert_array_equal(
        out.loc[long["symbol"] == "BBB", "rsi_14"].to_numpy(), talib.RSI(b["close"].to_numpy(), 14)
    )
    np.testing.assert_array_equal(
        out.loc[long["symbol"] == "AAA", "rsi_14"].to_numpy(), talib.RSI(a["close"].to_numpy(), 14)
    )


def test_wide_frame_of_closes_gives_one_wide_frame_per_output() -> None:
    closes = pd.DataFrame(
        {"AAA": random_bars(300, seed=1)["close"], "BBB": random_bars(300, seed=2)["close"]}
    )
    out = compute(closes, [SMA(20), BBands()])
    assert isinstance(out, dict)
    assert set(out) == {"sma_20", "bb_upper_20_2", "bb_middle_20_2", "bb_lower_20_2"}
    np.testing.assert_allclose(
        out["sma_20"]["BBB"].to_numpy(), talib.SMA(closes["BBB"].to_numpy(), 20), rtol=1e-9
    )


def test_specs_round_trip_through_their_dict() -> None:
    for spec in (RSI(9), MACD(5, 35, 5), BBands(10, 1.5), ATRRegime(14, 50), OpeningRange(15)):
        assert indicator_from_dict(spec.to_dict()) == spec


def test_atr_regime_label_names_the_code() -> None:
    assert [ATRRegime.label(c) for c in (-1.0, 0.0, 1.0, np.nan)] == [
        "low",
        "normal",
        "high",
        None,
    ]


def test_talib_runs_with_the_default_seeding_the_states_reproduce() -> None:
    # the states repeat TA-Lib's default seeding; a changed unstable period would break it
    assert [talib.get_unstable_period(f) for f in ("RSI", "EMA", "ATR")] == [0, 0, 0]
    assert talib.get_compatibility() == 0


@pytest.mark.parametrize("period", [2, 10, 200, 1000])
def test_sma_kernel_equals_talibs_sma_over_a_long_series(period: int) -> None:
    # many re-summation blocks; the tolerance is relative, as prices are checked at any level
    close = random_bars(200_000, seed=period)["close"].to_numpy()
    for scale in (1e-3, 1.0, 1e6):
        got, reference = ind.sma(close * scale, period), talib.SMA(close * scale, period)
        np.testing.assert_allclose(got[period - 1 :], reference[period - 1 :], rtol=1e-9)
        assert np.isnan(got[: period - 1]).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, (np.inf, -np.inf), (np.inf, np.inf)])
@pytest.mark.parametrize("row", [7, 9000, 99_999])
def test_sma_kernel_names_the_first_non_finite_price(bad: object, row: int) -> None:
    # in the first block, in a later one, at the very end; an infinity leaving the window
    # against another one (inf - inf) must not pass for finite either
    close = random_bars(100_000)["close"].to_numpy().copy()
    close[row], close[min(row + 2, len(close) - 1)] = bad if isinstance(bad, tuple) else (bad, bad)
    with pytest.raises(
        ValidationError, match=rf"close has NaN or infinite values \(the first at row {row}\)"
    ):
        ind.sma(close, 10)
