"""The cache's indicator hash is filled from the states, and the states resume after a restart
(real Redis, per-test namespace)."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import redis

from tests.indicators.conftest import random_bars
from tradeos_lab.errors import ValidationError
from tradeos_lab.indicators import ATR, EMA, MACD, RSI, SMA, BBands, IndicatorSet, SessionVWAP
from tradeos_lab.indicators.live import load_state, resume_from_cache, update_cache
from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.tiers.cache import Cache

INDICATORS = IndicatorSet([RSI(14), SMA(20), EMA(10), MACD(), BBands(), ATR(14), SessionVWAP()])
BARS = random_bars(160, start="2024-03-05 00:00", seed=11)


@pytest.fixture
def make_cache(
    shared_redis: redis.Redis, keys: Keys, settings_factory: Callable[..., Settings]
) -> Callable[[], Cache]:
    """A new Cache over the same Redis and namespace: what a restarted process builds."""
    settings = settings_factory()
    return lambda: Cache(shared_redis, keys=keys, settings=settings)


def _feed(cache: Cache, state, bars: pd.DataFrame) -> dict[str, float]:
    values: dict[str, float] = {}
    for bar in bars.to_dict("records"):
        values = update_cache(cache, "AAPL", "1m", state, bar)
    return values


def test_update_cache_writes_the_bar_with_the_finite_indicator_values(make_cache) -> None:
    cache = make_cache()
    state = INDICATORS.state()
    _feed(cache, state, BARS.iloc[:30])
    snapshot = cache.get_snapshot("AAPL", "1m")
    assert len(snapshot.bars) == 30
    assert snapshot.indicators is not None
    assert snapshot.indicators.ts == BARS["ts"].iloc[29]
    expected = INDICATORS.batch(BARS).iloc[29]  # a batch value depends only on earlier bars
    defined = expected.dropna()
    assert set(snapshot.indicators.values) == set(defined.index)  # MACD is still warming up
    assert "macd_12_26_9" not in snapshot.indicators.values
    for name, value in defined.items():
        assert snapshot.indicators.values[name] == pytest.approx(value, rel=1e-9)


def test_a_restart_resumes_the_saved_states_without_replaying(make_cache) -> None:
    cache = make_cache()
    state = INDICATORS.state()
    _feed(cache, state, BARS.iloc[:100])
    resumed = resume_from_cache(make_cache(), "AAPL", "1m", INDICATORS)
    assert resumed.to_dict() == state.to_dict()
    _feed(cache, resumed, BARS.iloc[100:])
    got = cache.get_indicators("AAPL", "1m")
    assert got is not None
    expected = INDICATORS.batch(BARS).iloc[-1]
    for name, value in expected.items():
        assert got.values[name] == pytest.approx(value, rel=1e-9)


def test_resume_replays_bars_cached_after_the_saved_states(make_cache) -> None:
    cache = make_cache()
    _feed(cache, INDICATORS.state(), BARS.iloc[:80])
    # a crash after the bar was cached but before its states were saved
    for bar in BARS.iloc[80:83].to_dict("records"):
        cache.append_bar("AAPL", "1m", bar)
    resumed = resume_from_cache(make_cache(), "AAPL", "1m", INDICATORS)
    assert resumed.last_ts == BARS["ts"].iloc[82].value
    got = cache.get_indicators("AAPL", "1m")
    assert got is not None
    assert got.ts == BARS["ts"].iloc[82]
    expected = INDICATORS.batch(BARS.iloc[:83]).iloc[-1]
    for name, value in expected.items():
        assert got.values[name] == pytest.approx(value, rel=1e-9)
    reloaded = load_state(cache, "AAPL", "1m")
    assert reloaded is not None
    assert reloaded.to_dict() == resumed.to_dict()


def test_a_different_indicator_set_is_warmed_on_the_cached_bars(make_cache) -> None:
    cache = make_cache()
    _feed(cache, IndicatorSet([RSI(14)]).state(), BARS.iloc[:120])
    other = IndicatorSet([SMA(50), ATR(14)])
    resumed = resume_from_cache(make_cache(), "AAPL", "1m", other)
    assert resumed.indicators == other
    got = cache.get_indicators("AAPL", "1m")
    assert got is not None
    expected = other.batch(BARS.iloc[:120]).iloc[-1]
    assert got.values == pytest.approx(expected.to_dict(), rel=1e-9)


def test_corrupt_saved_states_are_rebuilt_from_the_cached_bars(
    make_cache, shared_redis: redis.Redis, keys: Keys
) -> None:
    cache = make_cache()
    _feed(cache, INDICATORS.state(), BARS.iloc[:50])
    shared_redis.set(keys.indicator_state("AAPL", "1m"), b"{not json")
    resumed = resume_from_cache(make_cache(), "AAPL", "1m", INDICATORS)
    saved = json.loads(shared_redis.get(keys.indicator_state("AAPL", "1m")))
    assert saved == resumed.to_dict()
    np.testing.assert_allclose(
        list(resumed.update(BARS.iloc[50].to_dict()).values()),
        INDICATORS.batch(BARS.iloc[:51]).iloc[-1].to_numpy(),
        rtol=1e-9,
        equal_nan=True,
    )


def test_a_bad_bar_changes_neither_the_cache_nor_the_states(make_cache) -> None:
    cache = make_cache()
    state = INDICATORS.state()
    _feed(cache, state, BARS.iloc[:10])
    before = state.to_dict()
    bad = {**BARS.iloc[10].to_dict(), "close": -1.0}
    with pytest.raises(ValidationError):
        update_cache(cache, "AAPL", "1m", state, bad)
    assert state.to_dict() == before
    assert len(cache.get_bars("AAPL", "1m")) == 10
