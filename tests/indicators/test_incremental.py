"""Incremental states: bar by bar they give the batch values, and they resume from a snapshot.

"The same values" means the same floats where the batch form is a kernel of ours (the states
repeat its operations), and equal to 1e-9 relative where the batch form calls TA-Lib (RSI,
MACD, Bollinger Bands: the states repeat TA-Lib's arithmetic, but its compiled code may round
differently by about one unit in the last place). MACD line and histogram are differences of
prices that cross zero, so for them the tolerance is 1e-9 relative to the price level instead.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    IndicatorSetState,
    IndicatorState,
    OpeningRange,
    SessionVWAP,
    VolumePercentile,
)

SPECS = [
    RSI(14),
    RSI(3),
    SMA(5),
    SMA(20),
    EMA(5),
    EMA(20),
    MACD(3, 7, 4),
    MACD(),
    BBands(5, 2.0),
    BBands(20, 2.0),
    ATR(5),
    ATR(14),
    ATRRegime(5, 10),
    VolumePercentile(7),
    SessionVWAP("24/7"),
    SessionVWAP("XNYS"),
    OpeningRange(30, "XNYS"),
    OpeningRange(60, "24/7"),
]
MINUTE = 60_000_000_000


def feed(state: IndicatorSetState | IndicatorState, bars: pd.DataFrame) -> pd.DataFrame:
    rows = [state.update(bar) for bar in bars.to_dict("records")]
    return pd.DataFrame(rows, index=bars.index, columns=list(state.outputs), dtype=float)


TALIB_BATCH = ("rsi_", "macd_", "bb_")  # outputs whose batch form is a TA-Lib call


def assert_same(incremental: pd.DataFrame, batch: pd.DataFrame, price_level: float) -> None:
    for column in batch.columns:
        if not column.startswith(TALIB_BATCH):
            np.testing.assert_array_equal(
                incremental[column].to_numpy(), batch[column].to_numpy(), err_msg=column
            )
            continue
        atol = 1e-9 * price_level if column.startswith("macd") else 0.0
        np.testing.assert_allclose(
            incremental[column].to_numpy(),
            batch[column].to_numpy(),
            rtol=1e-9,
            atol=atol,
            equal_nan=True,
            err_msg=column,
        )


@st.composite
def bar_series(draw: st.DrawFn) -> pd.DataFrame:
    """Random bars: a walk clipped to [1, 1000], gaps from a minute to days, NaN volumes."""
    n = draw(st.integers(1, 160))
    start = pd.Timestamp("2024-03-04 14:00", tz="UTC") + pd.Timedelta(
        minutes=draw(st.integers(0, 60 * 24 * 3))
    )
    gaps = draw(
        st.lists(
            st.one_of(st.integers(1, 3), st.integers(1, 3), st.integers(4, 60 * 24 * 3)),
            min_size=n,
            max_size=n,
        )
    )
    # flat stretches (no change, no range) are where rounding and zero-division rules show
    steps = draw(st.lists(st.one_of(st.just(0.0), st.floats(-0.05, 0.05)), min_size=n, max_size=n))
    spreads = draw(st.lists(st.one_of(st.just(0.0), st.floats(0, 0.02)), min_size=n, max_size=n))
    volumes = draw(
        st.lists(
            st.one_of(st.just(math.nan), st.floats(0, 1e6), st.sampled_from([0.0, 10.0])),
            min_size=n,
            max_size=n,
        )
    )
    level = draw(st.floats(1, 1000))
    close = np.clip(level * np.exp(np.cumsum(steps)), 1, 1000)
    spread = np.array(spreads)
    ts = start + pd.to_timedelta(np.cumsum(gaps) * MINUTE, unit="ns")
    return pd.DataFrame(
        {
            "ts": ts,
            "open": close,
            "high": close * (1 + spread),
            "low": close * (1 - spread),
            "close": close,
            "volume": volumes,
        }
    )


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bars=bar_series(), split=st.floats(0, 1))
def test_feeding_bars_one_by_one_gives_the_batch_values(bars: pd.DataFrame, split: float) -> None:
    cut = int(len(bars) * split)
    for spec in SPECS:
        state = spec.state()
        first = feed(state, bars.iloc[:cut])
        resumed = IndicatorState.from_dict(json.loads(json.dumps(state.to_dict())))
        incremental = pd.concat([first, feed(resumed, bars.iloc[cut:])])
        if len(bars) <= spec.warmup:
            # too short for one value: the batch form refuses, the states stay undefined
            with pytest.raises(ValidationError, match="needs at least"):
                spec.batch(bars)
            assert incremental.isna().all().all(), spec.name
            continue
        assert_same(incremental, spec.batch(bars), float(bars["close"].max()))


def test_a_set_state_resumes_from_its_json_snapshot() -> None:
    bars = random_bars(3000, seed=3)
    bars.loc[bars.index % 13 == 0, "volume"] = np.nan
    indicators = IndicatorSet(SPECS)
    state = indicators.state()
    first = feed(state, bars.iloc[:1700])
    saved = json.dumps(state.to_dict(), allow_nan=False)
    rest = feed(IndicatorSetState.from_dict(json.loads(saved)), bars.iloc[1700:])
    assert_same(pd.concat([first, rest]), indicators.batch(bars), float(bars["close"].max()))


def test_nan_volume_is_left_out_of_vwap_and_percentile_in_both_forms() -> None:
    bars = random_bars(40, start="2024-03-05 00:00")
    bars["volume"] = 1.0
    bars.loc[5, "volume"] = np.nan
    specs = IndicatorSet([SessionVWAP(), VolumePercentile(5)])
    batch = specs.batch(bars)
    typical = (bars["high"] + bars["low"] + bars["close"]) / 3
    known = bars["volume"].notna()
    expected_vwap = typical.where(known, 0).cumsum() / known.cumsum()
    np.testing.assert_allclose(batch["vwap_24_7"], expected_vwap, rtol=1e-12)
    assert np.isnan(batch.loc[5, "volume_pct_5"])
    # with equal volumes every known bar sits mid-rank among the known volumes of its window
    assert batch.loc[6, "volume_pct_5"] == pytest.approx(0.5)
    assert_same(feed(specs.state(), bars), batch, 1.0)


def test_a_saved_state_with_an_unknown_spec_is_refused() -> None:
    saved = RSI(14).state().to_dict()
    saved["spec"]["kind"] = "nope"
    with pytest.raises(ValidationError, match="unknown indicator spec"):
        IndicatorState.from_dict(saved)
    with pytest.raises(ValidationError, match="malformed"):
        IndicatorState.from_dict({"spec": RSI(14).to_dict()})


@pytest.mark.parametrize(
    "spec", [SMA(3), SMA(200), SMA(1000), EMA(10), ATR(14)], ids=lambda spec: spec.name
)
def test_states_of_our_kernels_give_the_batch_floats_over_a_long_series(spec) -> None:
    # 100k bars span many of the SMA's exact re-summations; 50_003 resumes a JSON snapshot in
    # the middle of a four-bar step of the EMA/ATR recurrence, and the series ends in one
    bars = random_bars(100_001, seed=5)
    for column in ("open", "high", "low", "close"):
        bars[column] *= 1000
    state = spec.state()
    first = feed(state, bars.iloc[:50_003])
    resumed = IndicatorState.from_dict(json.loads(json.dumps(state.to_dict())))
    incremental = pd.concat([first, feed(resumed, bars.iloc[50_003:])])
    np.testing.assert_array_equal(incremental[spec.name], spec.batch(bars)[spec.name])
