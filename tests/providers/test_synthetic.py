"""The synthetic provider: deterministic, consistent across sub-ranges, and market-shaped."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from provider_servers import utc

from tradeos_lab.bars import BAR_COLUMNS, validate_bars
from tradeos_lab.errors import SymbolError, ValidationError
from tradeos_lab.providers import BarProvider, SyntheticProvider

WINDOW_START = utc(2024, 5, 1)
STEPS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}


def test_it_is_a_bar_provider() -> None:
    assert isinstance(SyntheticProvider(seed=1), BarProvider)


def test_the_same_request_gives_the_same_bars() -> None:
    one = SyntheticProvider(seed=42).fetch_bars("BTC-USD", "1m", utc(2024, 1, 1), utc(2024, 1, 3))
    two = SyntheticProvider(seed=42).fetch_bars("BTC-USD", "1m", utc(2024, 1, 1), utc(2024, 1, 3))
    pd.testing.assert_frame_equal(one, two, check_exact=True)


def test_seeds_and_symbols_give_different_series() -> None:
    def closes(seed: int, symbol: str) -> np.ndarray:
        bars = SyntheticProvider(seed=seed).fetch_bars(
            symbol, "1h", utc(2024, 1, 1), utc(2024, 1, 2)
        )
        return bars["close"].to_numpy()

    assert not np.array_equal(closes(1, "AAPL"), closes(2, "AAPL"))
    assert not np.array_equal(closes(1, "AAPL"), closes(1, "MSFT"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(min_value=0, max_value=2**63 - 1),
    timeframe=st.sampled_from(["1m", "5m", "1h"]),
    offsets=st.tuples(st.integers(0, 3 * 86400), st.integers(1, 3 * 86400)),
)
def test_any_sub_range_agrees_with_the_whole_range(
    seed: int, timeframe: str, offsets: tuple[int, int]
) -> None:
    provider = SyntheticProvider(seed=seed)
    whole_end = WINDOW_START + timedelta(days=7)
    whole = provider.fetch_bars("ETH-USD", timeframe, WINDOW_START, whole_end)
    start = WINDOW_START + timedelta(seconds=offsets[0])
    end = min(start + timedelta(seconds=offsets[1]), whole_end)
    part = provider.fetch_bars("ETH-USD", timeframe, start, end)
    inside = whole.loc[(whole["ts"] >= start) & (whole["ts"] < end)].reset_index(drop=True)
    pd.testing.assert_frame_equal(part, inside, check_exact=True)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    symbol=st.sampled_from(["AAPL", "BTC/USD", "BRK.B", "X"]),
    timeframe=st.sampled_from(list(STEPS)),
    start_day=st.integers(0, 20_000),
)
def test_bars_are_valid_positive_and_on_the_grid(
    seed: int, symbol: str, timeframe: str, start_day: int
) -> None:
    start = utc(1980, 1, 1) + timedelta(days=start_day)
    bars = SyntheticProvider(seed=seed).fetch_bars(
        symbol, timeframe, start, start + timedelta(seconds=STEPS[timeframe] * 500)
    )
    assert list(bars.columns) == list(BAR_COLUMNS)
    pd.testing.assert_frame_equal(validate_bars(bars), bars)
    assert len(bars) > 400
    assert (bars[["open", "high", "low", "close", "vwap"]] > 0).all().all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert bars["vwap"].between(bars["low"], bars["high"]).all()
    assert (bars["volume"] > 0).all()
    assert (bars["trade_count"] >= 1).all()


@pytest.fixture(scope="module")
def month() -> pd.DataFrame:
    return SyntheticProvider(seed=3).fetch_bars("BTC-USD", "1m", utc(2024, 1, 1), utc(2024, 2, 1))


def test_a_close_is_the_next_bars_open(month: pd.DataFrame) -> None:
    consecutive = month["ts"].diff().shift(-1) == pd.Timedelta(minutes=1)
    np.testing.assert_array_equal(
        month["close"][consecutive].to_numpy(), month["open"].shift(-1)[consecutive].to_numpy()
    )


def test_volatility_comes_in_calm_and_volatile_regimes(month: pd.DataFrame) -> None:
    returns = np.log(month["close"] / month["open"])
    rolling = returns.rolling(60).std().dropna()
    assert rolling.quantile(0.95) / rolling.quantile(0.05) > 2.0
    # clustering: big moves follow big moves
    size = returns.abs()
    assert size.autocorr(lag=1) > 0.1
    assert returns.kurt() > 1.0  # fat tails from the regime mixture


def test_volatility_matches_the_requested_annual_figure(month: pd.DataFrame) -> None:
    returns = np.log(month["close"] / month["open"])
    annual = returns.std() * np.sqrt(365.25 * 24 * 60)
    assert 0.45 < annual < 0.75  # default 0.6


def test_volume_follows_a_u_curve_over_the_day(month: pd.DataFrame) -> None:
    by_hour = month.groupby(month["ts"].dt.hour)["volume"].mean()
    edges = by_hour.loc[[0, 1, 22, 23]].mean()
    middle = by_hour.loc[[10, 11, 12, 13]].mean()
    assert edges > 1.5 * middle


def test_a_few_bars_are_missing(month: pd.DataFrame) -> None:
    expected = 31 * 24 * 60
    missing = expected - len(month)
    assert 0 < missing < 0.02 * expected
    assert (month["ts"].diff().dropna() > pd.Timedelta(minutes=1)).any()


def test_gaps_can_be_switched_off() -> None:
    bars = SyntheticProvider(seed=3, gap_rate=0, outage_rate=0).fetch_bars(
        "BTC-USD", "1m", utc(2024, 1, 1), utc(2024, 1, 8)
    )
    assert len(bars) == 7 * 24 * 60


def test_drift_moves_prices_in_its_direction() -> None:
    def growth(drift: float) -> float:
        bars = SyntheticProvider(seed=5, annual_drift=drift, annual_volatility=0.1).fetch_bars(
            "SPY", "1d", utc(2020, 1, 1), utc(2024, 1, 1)
        )
        return float(np.log(bars["close"].iloc[-1] / bars["close"].iloc[0]))

    assert growth(1.0) > 3.0
    assert growth(-1.0) < -3.0


@pytest.mark.parametrize(
    ("symbol", "timeframe", "start", "end", "error"),
    [
        ("AAPL'; DROP TABLE x;--", "1h", utc(2024, 1, 1), utc(2024, 1, 2), SymbolError),
        ("AAPL", "7m", utc(2024, 1, 1), utc(2024, 1, 2), ValidationError),
        ("AAPL", "1h", utc(2024, 1, 2), utc(2024, 1, 1), ValidationError),
        ("AAPL", "1h", 20240101, utc(2024, 1, 2), ValidationError),
    ],
)
def test_bad_input_is_rejected(
    symbol: str, timeframe: str, start: object, end: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        SyntheticProvider().fetch_bars(symbol, timeframe, start, end)  # type: ignore[arg-type]


def test_naive_datetimes_are_read_as_utc() -> None:
    provider = SyntheticProvider(seed=1)
    aware = provider.fetch_bars("AAPL", "1h", utc(2024, 1, 1), utc(2024, 1, 2))
    naive = provider.fetch_bars(
        "AAPL", "1h", utc(2024, 1, 1).replace(tzinfo=None), "2024-01-02T00:00:00"
    )
    pd.testing.assert_frame_equal(aware, naive)
