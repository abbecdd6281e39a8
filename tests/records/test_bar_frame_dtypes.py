"""One bar frame whatever store it comes from: the lake, PostgreSQL and the cache read bars back
with the dtypes of `tradeos_lab.bars` (pandas' default string dtype for symbol and timeframe), so
a frame built by hand keeps its string dtype through a write and a read on every store."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest
import redis
from sqlalchemy import create_engine
from test_pg_bars import make_bars

from tradeos_lab.bars import BAR_DTYPES, empty_bars, validate_bars
from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.stores.bars_pg import PostgresBarStore
from tradeos_lab.stores.lake import Lake
from tradeos_lab.tiers.cache import Cache


def test_bar_frame_dtypes_are_pandas_default_strings() -> None:
    hand_made = pd.DataFrame({"symbol": ["AAPL"], "timeframe": ["1m"]})
    assert empty_bars().dtypes.to_dict() == BAR_DTYPES
    assert BAR_DTYPES["symbol"] == hand_made["symbol"].dtype
    assert BAR_DTYPES["timeframe"] == hand_made["timeframe"].dtype


@pytest.mark.postgres
def test_lake_postgres_and_cache_read_bars_back_with_identical_dtypes(
    pg_url: str,
    settings_factory: Callable[..., Settings],
    shared_redis: redis.Redis,
    keys: Keys,
) -> None:
    # Recent bars: the lake keeps 1m bars for a limited time only.
    bars = make_bars("AAPL", start=pd.Timestamp.now("UTC").floor("h") - pd.Timedelta(hours=2), n=30)
    settings = settings_factory()
    engine = create_engine(pg_url)
    try:
        postgres = PostgresBarStore(engine)
        postgres.write_bars(bars)
        reads = {
            "postgres": postgres.read_bars("AAPL", "1m"),
            "postgres, nothing stored": postgres.read_bars("MSFT", "1m"),
        }
    finally:
        engine.dispose()
    with Lake.open(settings) as lake:
        lake.write_bars(bars)
        reads["lake"] = lake.read_bars("AAPL", "1m")
        reads["lake, nothing stored"] = lake.read_bars("MSFT", "1m")
    cache = Cache(shared_redis, keys=keys, settings=settings)
    cache.write_bars(bars)
    reads["cache"] = cache.get_bars("AAPL", "1m")
    reads["cache, nothing stored"] = cache.get_bars("MSFT", "1m")

    written = validate_bars(bars)
    for where, got in reads.items():
        assert got.dtypes.to_dict() == BAR_DTYPES, where
        assert got["symbol"].dtype == bars["symbol"].dtype, where  # as the hand-made frame
        if "nothing" not in where:
            pd.testing.assert_frame_equal(got, written, check_exact=False, rtol=1e-12, obj=where)
