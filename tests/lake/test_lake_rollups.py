"""Rollups 1m -> 5m -> 15m -> 1h -> 1d computed by the engine, checked against pandas resample."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lake_helpers import ANCHOR, RULES, assert_same_bars, make_bars, pandas_rollup

from tradeos_lab.settings import Settings
from tradeos_lab.stores.lake import Lake


def two_days_of_minutes() -> pd.DataFrame:
    """Two symbols, two days and a bit, with holes and some bars lacking a vwap."""
    rng = np.random.default_rng(7)
    frames = []
    for i, symbol in enumerate(("AAPL", "BTC-USD")):
        bars = make_bars(symbol, periods=2 * 1440 + 97, seed=i)
        keep = rng.uniform(size=len(bars)) > 0.05
        bars = bars[keep].copy()
        bars.loc[rng.uniform(size=len(bars)) < 0.1, "vwap"] = np.nan
        frames.append(bars)
    return pd.concat(frames, ignore_index=True)


def test_every_tier_matches_pandas_resample_of_the_minutes(any_lake: Lake) -> None:
    bars = two_days_of_minutes()
    any_lake.write_bars(bars)

    for tf, rule in RULES.items():
        want = pandas_rollup(bars, rule)
        for symbol in ("AAPL", "BTC-USD"):
            got = any_lake.read_bars(symbol, tf)
            assert (got["timeframe"] == tf).all()
            assert_same_bars(got, want[want["symbol"] == symbol])


def test_a_partial_bucket_is_recomputed_when_the_rest_of_it_arrives(any_lake: Lake) -> None:
    bars = make_bars(periods=60)
    any_lake.write_bars(bars.iloc[:25])
    partial = any_lake.read_bars("AAPL", "1h")
    assert partial["volume"].iloc[0] == pytest.approx(bars["volume"].iloc[:25].sum())

    any_lake.write_bars(bars.iloc[25:])

    assert_same_bars(any_lake.read_bars("AAPL", "1h"), pandas_rollup(bars, "1h"))
    assert_same_bars(any_lake.read_bars("AAPL", "5m"), pandas_rollup(bars, "5min"))


def test_chunks_written_out_of_order_roll_up_the_same(lake: Lake) -> None:
    bars = make_bars(periods=300, seed=4)
    for chunk in (bars.iloc[200:], bars.iloc[:90], bars.iloc[90:200]):
        lake.write_bars(chunk)

    assert_same_bars(lake.read_bars("AAPL", "15m"), pandas_rollup(bars, "15min"))
    assert_same_bars(lake.read_bars("AAPL", "1h"), pandas_rollup(bars, "1h"))


def test_hourly_bars_written_directly_roll_into_daily_bars(any_lake: Lake) -> None:
    hours = make_bars("ETH-USD", "1h", periods=72, seed=2)
    any_lake.write_bars(hours)

    assert any_lake.read_bars("ETH-USD", "1m").empty
    assert_same_bars(any_lake.read_bars("ETH-USD", "1d"), pandas_rollup(hours, "1D"))


def test_daily_bars_start_at_utc_midnight(lake: Lake) -> None:
    lake.write_bars(make_bars(start=ANCHOR + pd.Timedelta(hours=23), periods=120))

    days = lake.read_bars("AAPL", "1d")

    assert list(days["ts"]) == [ANCHOR, ANCHOR + pd.Timedelta(days=1)]


def test_resample_in_the_lake_equals_the_stored_rollup(any_lake: Lake) -> None:
    bars = two_days_of_minutes()
    any_lake.write_bars(bars)

    computed = any_lake.resample(["AAPL", "BTC-USD"], "1h")
    stored = pd.concat([any_lake.read_bars(s, "1h") for s in ("AAPL", "BTC-USD")])

    pd.testing.assert_frame_equal(computed, stored.reset_index(drop=True))
    only_btc = any_lake.resample("BTC-USD", "1d", start=ANCHOR + pd.Timedelta(days=1))
    assert list(only_btc["ts"]) == [ANCHOR + pd.Timedelta(days=1), ANCHOR + pd.Timedelta(days=2)]


# ---- deferred rollups: queued by writes, settled by reads of coarse tiers --------------------


def raw_count(lake: Lake, sql: str) -> int:
    """A count read straight from the backend, which settles nothing."""
    return int(lake.backend.query_arrow(sql, {})["n"][0].as_py())


def pending(lake: Lake) -> int:
    return raw_count(lake, "SELECT count() AS n FROM rollup_pending FINAL WHERE done = 0")


def test_a_write_queues_its_span_and_the_first_coarse_read_settles_it(lake: Lake) -> None:
    bars = make_bars(periods=120)
    lake.write_bars(bars)
    assert pending(lake) == 1
    assert raw_count(lake, "SELECT count() AS n FROM bars_5m") == 0, "not computed at write"
    assert len(lake.read_bars("AAPL", "1m")) == 120, "the written tier needs no refresh"
    assert pending(lake) == 1

    assert_same_bars(lake.read_bars("AAPL", "5m"), pandas_rollup(bars, "5min"))
    assert pending(lake) == 0
    assert_same_bars(lake.read_bars("AAPL", "1h"), pandas_rollup(bars, "1h"))
    assert lake.refresh_rollups() == 0, "nothing left to settle"


def test_raw_sql_over_a_coarse_tier_sees_finished_writes(any_lake: Lake) -> None:
    any_lake.write_bars(make_bars(periods=120))
    got = any_lake.query("SELECT count() AS n FROM bars_5m FINAL WHERE symbol = 'AAPL'")
    assert int(got["n"].iloc[0]) == 24


def test_a_live_feed_of_single_bars_rolls_up_like_one_batch(any_lake: Lake) -> None:
    bars = make_bars("BTC-USD", periods=75, seed=11)
    for i in range(len(bars)):
        any_lake.write_bars(bars.iloc[[i]])
        if i in (13, 44):  # reads in the middle of a bucket see the partial bucket
            assert_same_bars(
                any_lake.read_bars("BTC-USD", "15m"), pandas_rollup(bars.iloc[: i + 1], "15min")
            )
    for tf, rule in (("5m", "5min"), ("15m", "15min"), ("1h", "1h"), ("1d", "1D")):
        assert_same_bars(any_lake.read_bars("BTC-USD", tf), pandas_rollup(bars, rule))


def test_spans_far_apart_are_refreshed_without_the_time_between(lake: Lake) -> None:
    early = make_bars("AAPL", periods=90, seed=1)
    late = make_bars("AAPL", start=ANCHOR + pd.Timedelta(days=9), periods=90, seed=2)
    other = make_bars("MSFT", periods=30, seed=3)
    for chunk in (early.iloc[:40], late, other, early.iloc[40:]):  # touching chunks merge
        lake.write_bars(chunk)
    assert lake.refresh_rollups() == 4

    both = pd.concat([early, late], ignore_index=True)
    for tf, rule in (("5m", "5min"), ("1h", "1h"), ("1d", "1D")):
        assert_same_bars(lake.read_bars("AAPL", tf), pandas_rollup(both, rule))
        assert_same_bars(lake.read_bars("MSFT", tf), pandas_rollup(other, rule))
    assert len(lake.read_bars("AAPL", "1d")) == 2, "no bucket between the two spans"


def test_spans_queued_before_a_close_are_settled_after_reopening(lake_settings: Settings) -> None:
    bars = make_bars(periods=180, seed=5)
    with Lake.open(lake_settings) as first:
        first.write_bars(bars)
    with Lake.open(lake_settings) as second:
        assert pending(second) == 1
        assert_same_bars(second.read_bars("AAPL", "1h"), pandas_rollup(bars, "1h"))


def test_a_clients_write_is_settled_by_the_owners_read(gateway_pair: tuple[Lake, Lake]) -> None:
    owner, client = gateway_pair
    bars = make_bars(periods=120, seed=6)
    client.write_bars(bars)
    assert_same_bars(owner.read_bars("AAPL", "15m"), pandas_rollup(bars, "15min"))
    assert pending(client) == 0


def test_a_query_can_skip_settling_for_sql_that_reads_no_tier(lake: Lake) -> None:
    lake.write_bars(make_bars(periods=30))
    assert lake.query("SELECT 1 AS one", settle=False)["one"].iloc[0] == 1
    assert pending(lake) == 1
    lake.query("SELECT 1 AS one")
    assert pending(lake) == 0
