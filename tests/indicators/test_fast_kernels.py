"""The numba kernels that replace TA-Lib calls or slow loops give the reference values."""

from __future__ import annotations

import numpy as np
import pytest
import talib

import tradeos_lab.indicators as ind
from tests.indicators.conftest import random_bars
from tradeos_lab.errors import ValidationError
from tradeos_lab.indicators import kernels

LONG = random_bars(100_000, seed=7)


@pytest.mark.parametrize("period", [2, 10, 20, 200])
def test_ema_kernel_equals_talibs_ema_over_a_long_series(period: int) -> None:
    for scale in (1.0, 1e6):  # price level: the tolerance is relative
        close = LONG["close"].to_numpy() * scale
        got, reference = ind.ema(close, period), talib.EMA(close, period)
        np.testing.assert_allclose(got[period - 1 :], reference[period - 1 :], rtol=1e-9)
        assert np.isnan(got[: period - 1]).all()


@pytest.mark.parametrize("period", [2, 14, 100])
def test_atr_kernel_equals_talibs_atr_over_a_long_series(period: int) -> None:
    h, lo, c = (LONG[k].to_numpy() for k in ("high", "low", "close"))
    got, reference = ind.atr(h, lo, c, period), talib.ATR(h, lo, c, period)
    np.testing.assert_allclose(got[period:], reference[period:], rtol=1e-9)
    assert np.isnan(got[:period]).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, (np.inf, -np.inf)])
@pytest.mark.parametrize("row", [0, 300, 499])
def test_ema_kernel_names_the_first_non_finite_price(bad: object, row: int) -> None:
    # in the seed, in the recurrence, the last bar; opposite infinities must not cancel out
    close = LONG["close"].to_numpy()[:500].copy()
    close[row], close[min(row + 10, 499)] = bad if isinstance(bad, tuple) else (bad, bad)
    with pytest.raises(
        ValidationError, match=rf"close has NaN or infinite values \(the first at row {row}\)"
    ):
        ind.ema(close, 20)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("row", [0, 5, 123, 499])
@pytest.mark.parametrize("column", ["high", "low", "close"])
def test_atr_kernel_names_the_column_and_row_of_the_first_non_finite_price(
    column: str, row: int, bad: float
) -> None:
    # the first bar (no true range), the seed, the smoothing, the last bar (no later close)
    arrays = {k: LONG[k].to_numpy()[:500].copy() for k in ("high", "low", "close")}
    arrays[column][row] = bad
    with pytest.raises(
        ValidationError, match=rf"{column} has NaN or infinite values \(the first at row {row}\)"
    ):
        ind.atr(arrays["high"], arrays["low"], arrays["close"], 14)


def mid_rank_percentiles(x: np.ndarray, window: int) -> np.ndarray:
    """The definition, spelled out: (below + equal / 2) / known over each full window."""
    out = np.full(len(x), np.nan)
    for i in range(window - 1, len(x)):
        values = x[i - window + 1 : i + 1]
        known = values[~np.isnan(values)]
        if not np.isnan(x[i]):
            out[i] = ((known < x[i]).sum() + 0.5 * (known == x[i]).sum()) / len(known)
    return out


@pytest.mark.parametrize("window", [1, 2, 5, 300, 1100])
def test_both_percentile_forms_give_the_definitions_values(window: int) -> None:
    rng = np.random.default_rng(window)
    x = rng.integers(0, 40, 3000).astype(float)  # many ties
    x[rng.random(len(x)) < 0.1] = np.nan  # unknown values
    x[500:900] = np.nan  # a stretch longer than some windows: the window empties
    expected = mid_rank_percentiles(x, window)
    for form in (kernels._percentile_by_counting, kernels._percentile_by_sorted_window):
        np.testing.assert_array_equal(form(x, window), expected, err_msg=form.__name__)
    np.testing.assert_array_equal(ind.rolling_percentile(x, window), expected)
