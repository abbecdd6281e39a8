"""PostgresBarStore on the machine's PostgreSQL 15 (no TimescaleDB): the native layout."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from tradeos_lab.bars import BarStore, validate_bars
from tradeos_lab.errors import ConfigError, DependencyUnavailable, ValidationError
from tradeos_lab.stores.bars_pg import PostgresBarStore, _prepare, schema_sql

pytestmark = pytest.mark.postgres

T0 = pd.Timestamp("2024-01-30 22:00", tz="UTC")


def make_bars(
    symbol: str = "AAPL",
    *,
    start: pd.Timestamp = T0,
    n: int = 120,
    timeframe: str = "1m",
    seed: int = 1,
    drop: tuple[int, ...] = (),
) -> pd.DataFrame:
    """Valid bars on the timeframe's grid; `drop` removes rows by position to make gaps."""
    rng = np.random.default_rng(seed)
    step = pd.Timedelta({"1m": "1min", "5m": "5min", "1h": "1h", "1d": "1D"}[timeframe])
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = close * np.exp(rng.normal(0, 5e-4, n))
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "timeframe": timeframe,
            "ts": pd.date_range(start, periods=n, freq=step),
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": rng.gamma(2.0, 50.0, n).round(3) + 0.001,
            "vwap": (open_ + close) / 2,
            "trade_count": pd.array(rng.integers(1, 200, n), dtype="Int64"),
        }
    )
    return frame.drop(index=list(drop)).reset_index(drop=True)


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> PostgresBarStore:
    return PostgresBarStore(engine)


def _scalar(engine: Engine, sql: str, *params: Any) -> Any:
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
            return row[0] if row else None
    finally:
        raw.close()


def _count(engine: Engine) -> int:
    return int(_scalar(engine, "SELECT count(*) FROM market_data_bars"))


# ---- layout --------------------------------------------------------------------------------


def test_store_implements_the_bar_store_protocol(store: PostgresBarStore) -> None:
    assert isinstance(store, BarStore)
    assert store.mode == "native"


def test_without_timescaledb_bars_are_range_partitioned_with_refreshable_views(
    store: PostgresBarStore, engine: Engine
) -> None:
    assert (
        _scalar(
            engine,
            "SELECT partstrat FROM pg_partitioned_table "
            "WHERE partrelid = 'market_data_bars'::regclass",
        )
        == "r"
    )
    views = _scalar(
        engine,
        "SELECT array_agg(matviewname::text ORDER BY matviewname) FROM pg_matviews "
        "WHERE matviewname LIKE 'bars_%%'",
    )
    assert views == ["bars_1d", "bars_1h", "bars_5m"]
    # Writing bars across a month boundary creates one partition per month, in UTC even for a
    # session with another time zone and date style.
    local = create_engine(
        engine.url, connect_args={"options": "-c TimeZone=America/New_York -c DateStyle=SQL,DMY"}
    )
    bars = make_bars(start=pd.Timestamp("2024-01-31 23:30", tz="UTC"), n=60)
    PostgresBarStore(local).write_bars(bars)
    local.dispose()
    pd.testing.assert_frame_equal(store.read_bars("AAPL", "1m"), validate_bars(bars))
    partitions = _scalar(
        engine,
        "SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'market_data_bars'::regclass",
    )
    assert partitions == ["market_data_bars_2024_01", "market_data_bars_2024_02"]


def test_timescale_layout_uses_hypertable_continuous_aggregates_and_compression() -> None:
    ddl = "\n".join(schema_sql("timescale"))
    assert "PARTITION BY" not in ddl
    assert "SELECT create_hypertable('market_data_bars', 'timestamp'" in ddl
    assert "add_compression_policy('market_data_bars'" in ddl
    assert "timescaledb.compress_segmentby = 'symbol, timeframe'" in ddl
    for view, source in (
        ("bars_5m", "market_data_bars"),
        ("bars_1h", "bars_5m"),
        ("bars_1d", "bars_1h"),
    ):
        statement = next(s for s in schema_sql("timescale") if f"VIEW IF NOT EXISTS {view} " in s)
        assert "WITH (timescaledb.continuous" in statement
        assert "time_bucket(INTERVAL" in statement
        assert f"FROM {source}" in statement
        assert f"add_continuous_aggregate_policy('{view}'" in ddl
    native = "\n".join(schema_sql("native"))
    assert "time_bucket" not in native
    assert "timescaledb" not in native


def test_ensure_schema_twice_keeps_the_data(store: PostgresBarStore, engine: Engine) -> None:
    store.write_bars(make_bars())
    again = PostgresBarStore(engine)
    assert again.ensure_schema() == "native"
    assert _count(engine) == 120


# ---- writing and reading -------------------------------------------------------------------


def test_round_trip_returns_exactly_the_written_bars(store: PostgresBarStore) -> None:
    bars = make_bars()
    bars.loc[3, "vwap"] = np.nan
    bars.loc[4, "trade_count"] = pd.NA
    bars.loc[5:6, "vwap"] = np.nan  # a run of NULLs in the middle of a key
    assert store.write_bars(bars) == 120
    pd.testing.assert_frame_equal(store.read_bars("AAPL", "1m"), validate_bars(bars))


def test_writing_the_same_bars_twice_stores_them_once(
    store: PostgresBarStore, engine: Engine
) -> None:
    bars = pd.concat([make_bars("AAPL"), make_bars("BTC-USD", seed=2)], ignore_index=True)
    store.write_bars(bars)
    store.write_bars(bars)
    store.write_bars(bars.iloc[::-1])
    assert _count(engine) == 240
    meta = store.metadata()
    assert meta["total_bars_stored"].tolist() == [120, 120]
    assert meta["symbol"].tolist() == ["AAPL", "BTC-USD"]


def test_revised_bar_replaces_the_stored_one_and_new_bars_are_added(
    store: PostgresBarStore, engine: Engine
) -> None:
    store.write_bars(make_bars(n=100))
    revised = make_bars(n=130).iloc[90:].copy()
    revised.loc[95, "close"] = revised.loc[95, "low"]
    store.write_bars(revised)
    stored = store.read_bars("AAPL", "1m")
    assert len(stored) == _count(engine) == 130
    assert stored.loc[95, "close"] == revised.loc[95, "low"]
    meta = store.metadata("AAPL").iloc[0]
    assert meta["total_bars_stored"] == 130
    assert meta["earliest_data_date"] == T0
    assert meta["latest_data_date"] == T0 + pd.Timedelta(minutes=129)


def test_a_concurrent_writer_makes_the_copy_fall_back_to_the_merge(
    store: PostgresBarStore, engine: Engine
) -> None:
    bars = make_bars(n=10)
    store.write_bars(bars.iloc[4:5])  # "the other writer" stored one bar of the batch
    with store._connection() as pg:
        assert store._copy_direct(pg, _prepare(bars)) is None
        assert pg.execute("SELECT 1").fetchone() == (1,)  # the savepoint kept the transaction
    store.write_bars(bars)
    assert _count(engine) == 10
    assert store.metadata()["total_bars_stored"].tolist() == [10]


def test_read_range_is_half_open_and_limit_keeps_the_latest(store: PostgresBarStore) -> None:
    store.write_bars(make_bars())
    window = store.read_bars("AAPL", "1m", T0 + timedelta(minutes=10), T0 + timedelta(minutes=20))
    assert window["ts"].tolist() == list(
        pd.date_range(T0 + pd.Timedelta(minutes=10), periods=10, freq="1min")
    )
    latest = store.read_bars("AAPL", "1m", limit=5)
    assert latest["ts"].tolist() == list(
        pd.date_range(T0 + pd.Timedelta(minutes=115), periods=5, freq="1min")
    )
    assert store.read_bars("MSFT", "1m").empty
    naive = store.read_bars("AAPL", "1m", datetime(2024, 1, 30, 22, 0), limit=1)
    assert len(naive) == 1  # naive bounds are taken as UTC


def test_gaps_lists_missing_intervals_with_exclusive_end(store: PostgresBarStore) -> None:
    store.write_bars(make_bars(n=60, drop=(0, 1, 10, 11, 12, 30)))
    found = store.gaps("AAPL", "1m", T0 - timedelta(seconds=30), T0 + timedelta(minutes=62))
    minute = pd.Timedelta(minutes=1)
    assert found.to_dict("list") == {
        "gap_start": [T0, T0 + 10 * minute, T0 + 30 * minute, T0 + 60 * minute],
        "gap_end": [T0 + 2 * minute, T0 + 13 * minute, T0 + 31 * minute, T0 + 62 * minute],
        "missing_bars": [2, 3, 1, 2],
    }
    assert store.gaps("AAPL", "1m", T0 + 2 * minute, T0 + 10 * minute).empty
    nothing = store.gaps("MSFT", "1h", T0, T0 + pd.Timedelta(hours=3))
    assert nothing["missing_bars"].tolist() == [3]


def test_coverage_and_metadata_per_symbol_and_timeframe(store: PostgresBarStore) -> None:
    before = datetime.now(UTC)
    store.write_bars(make_bars("AAPL", n=30))
    store.write_bars(
        make_bars("AAPL", timeframe="1d", start=pd.Timestamp("2024-01-01", tz="UTC"), n=5)
    )
    store.write_bars(make_bars("ETH-USD", n=10))
    cov = store.coverage(["AAPL"])
    assert cov[["symbol", "timeframe", "bars"]].values.tolist() == [
        ["AAPL", "1d", 5],
        ["AAPL", "1m", 30],
    ]
    assert cov.loc[1, "latest"] == T0 + pd.Timedelta(minutes=29)
    assert set(store.coverage()["symbol"]) == {"AAPL", "ETH-USD"}
    meta = store.metadata()
    assert meta["total_bars_stored"].tolist() == [35, 10]
    assert meta.loc[0, "earliest_data_date"] == pd.Timestamp("2024-01-01", tz="UTC")
    assert (meta["last_fetched_at"] >= before - timedelta(seconds=5)).all()


# ---- rollups -------------------------------------------------------------------------------


def _resample(bars: pd.DataFrame, rule: str, timeframe: str) -> pd.DataFrame:
    """The reference: pandas' resample of 1m bars, with NULL vwap/trade_count if any input is."""
    frame = bars.set_index("ts")
    frame["pv"] = frame["vwap"] * frame["volume"]
    grouped = frame.resample(rule, label="left", closed="left")
    out = pd.DataFrame(
        {
            "open": grouped["open"].first(),
            "high": grouped["high"].max(),
            "low": grouped["low"].min(),
            "close": grouped["close"].last(),
            "volume": grouped["volume"].sum(),
            "vwap": grouped["pv"].sum(min_count=1) / grouped["volume"].sum(),
            "trade_count": grouped["trade_count"].sum(),
            "rows": grouped["open"].count(),
            "vwap_rows": grouped["vwap"].count(),
            "count_rows": grouped["trade_count"].count(),
        }
    )
    out = out[out["rows"] > 0]
    out.loc[out["vwap_rows"] < out["rows"], "vwap"] = np.nan
    counts = out["trade_count"].astype("Int64")
    counts[out["count_rows"] < out["rows"]] = pd.NA
    out["trade_count"] = counts
    out = out.drop(columns=["rows", "vwap_rows", "count_rows"]).reset_index()
    out.insert(0, "timeframe", timeframe)
    out.insert(0, "symbol", bars["symbol"].iloc[0])
    return validate_bars(out)


def _check_rollups(store: PostgresBarStore, by_symbol: dict[str, pd.DataFrame]) -> None:
    for symbol, bars in by_symbol.items():
        for timeframe, rule in (("5m", "5min"), ("1h", "1h"), ("1d", "1D")):
            got = store.read_bars(symbol, timeframe)
            want = _resample(bars, rule, timeframe)
            pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)


def test_rollups_refreshed_match_a_pandas_resample(store: PostgresBarStore) -> None:
    start = pd.Timestamp("2024-02-28 20:00", tz="UTC")  # across a day and a month boundary
    rng = np.random.default_rng(3)
    by_symbol = {}
    for i, symbol in enumerate(("AAPL", "BTC-USD")):
        holes = tuple(int(x) for x in rng.choice(3000, 200, replace=False))
        bars = make_bars(symbol, start=start, n=3000, seed=10 + i, drop=holes)
        bars.loc[rng.choice(len(bars), 15, replace=False), "vwap"] = np.nan
        bars.loc[rng.choice(len(bars), 15, replace=False), "trade_count"] = pd.NA
        by_symbol[symbol] = bars
        store.write_bars(bars)
    assert store.read_bars("AAPL", "1h").empty  # not refreshed yet
    store.refresh_rollups()
    _check_rollups(store, by_symbol)

    # More bars arrive (the next day, and a revision of a stored bar): refresh follows them.
    later = make_bars("AAPL", start=start + pd.Timedelta(minutes=3000), n=600, seed=99)
    revised = by_symbol["AAPL"].iloc[[50]].copy()
    revised["high"] = revised["high"] * 1.01
    store.write_bars(pd.concat([later, revised]))
    by_symbol["AAPL"] = pd.concat([by_symbol["AAPL"].drop(index=50), later, revised])
    by_symbol["AAPL"] = by_symbol["AAPL"].sort_values("ts", ignore_index=True)
    store.refresh_rollups()
    _check_rollups(store, by_symbol)


def test_stored_coarse_bars_win_over_rollups(store: PostgresBarStore) -> None:
    start = pd.Timestamp("2024-03-01", tz="UTC")
    store.write_bars(make_bars(start=start, n=180))  # three hours of 1m bars
    provider_hour = make_bars(start=start + pd.Timedelta(hours=1), timeframe="1h", n=1, seed=5)
    store.write_bars(provider_hour)
    store.refresh_rollups()
    hours = store.read_bars("AAPL", "1h")
    assert len(hours) == 3
    pd.testing.assert_frame_equal(
        hours.iloc[[1]].reset_index(drop=True), validate_bars(provider_hour)
    )
    assert store.coverage(["AAPL"]).set_index("timeframe").loc["1h", "bars"] == 3


# ---- bad input -----------------------------------------------------------------------------

BAD_FRAMES: dict[str, dict[str, object]] = {
    "sql injection symbol": {"symbol": "AAPL'; DROP TABLE x;--"},
    "empty symbol": {"symbol": ""},
    "10k-character symbol": {"symbol": "A" * 10_000},
    "look-alike unicode symbol": {"symbol": "АAPL"},  # Cyrillic A
    "unknown timeframe": {"timeframe": "7m"},
    "NaN price": {"open": np.nan},
    "infinite price": {"close": np.inf},
    "negative price": {"low": -1.0},
    "negative volume": {"volume": -5.0},
    "NaN volume": {"volume": np.nan},
    "trade_count beyond INTEGER": {"trade_count": 2**31},
}


@pytest.mark.parametrize("change", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_bad_bars_are_refused_and_tables_unchanged(
    store: PostgresBarStore, engine: Engine, change: dict[str, object]
) -> None:
    with psycopg.connect(engine.url.set(drivername="postgresql").render_as_string(False)) as pg:
        pg.execute("CREATE TABLE x (id int)")
    store.write_bars(make_bars(n=20))
    before = (_count(engine), store.metadata().to_dict("list"))
    bad = make_bars(start=T0 + pd.Timedelta(hours=1), n=20)
    for column, value in change.items():
        if column == "trade_count":
            bad[column] = bad[column].astype("int64")
        bad.loc[7, column] = value  # one bad row among good ones: nothing is written
    with pytest.raises(ValidationError):
        store.write_bars(bad)
    assert (_count(engine), store.metadata().to_dict("list")) == before
    assert _scalar(engine, "SELECT to_regclass('x') IS NOT NULL") is True


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.read_bars("AAPL'; DROP TABLE market_data_bars;--", "1m"),
        lambda s: s.read_bars("", "1m"),
        lambda s: s.read_bars("A" * 10_000, "1m"),
        lambda s: s.read_bars("АAPL", "1m"),
        lambda s: s.read_bars("AAPL", "7m"),
        lambda s: s.read_bars("AAPL", "1m", T0, T0 - timedelta(minutes=1)),
        lambda s: s.read_bars("AAPL", "1m", limit=0),
        lambda s: s.read_bars("AAPL", "1m", limit=True),
        lambda s: s.read_bars("AAPL", "1m", start="yesterday-ish"),
        lambda s: s.gaps("AAPL", "1m", T0, T0 - timedelta(minutes=1)),
        lambda s: s.gaps("AAPL", "fortnight", T0, T0),
        lambda s: s.coverage(["AAPL", "DROP TABLE market_data_bars;"]),
        lambda s: s.metadata(["ok", "АAPL"]),
    ],
    ids=[
        "read injection",
        "read empty symbol",
        "read long symbol",
        "read look-alike",
        "read unknown timeframe",
        "read start after end",
        "read limit zero",
        "read limit bool",
        "read unparseable start",
        "gaps start after end",
        "gaps unknown timeframe",
        "coverage injection",
        "metadata bad symbols",
    ],
)
def test_bad_read_arguments_are_validation_errors(
    store: PostgresBarStore, engine: Engine, call: Any
) -> None:
    store.write_bars(make_bars(n=10))
    with pytest.raises(ValidationError):
        call(store)
    assert _count(engine) == 10


def test_unreachable_server_is_a_transient_dependency_error() -> None:
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    with pytest.raises(DependencyUnavailable):
        PostgresBarStore(engine)


def test_an_engine_without_psycopg_is_refused(tmp_path: Any) -> None:
    with pytest.raises(ConfigError):
        PostgresBarStore(create_engine(f"sqlite:///{tmp_path / 'x.db'}"))


# ---- properties ----------------------------------------------------------------------------


def test_unsorted_frames_of_several_symbols_round_trip(store: PostgresBarStore) -> None:
    bars = pd.concat(
        [make_bars("AAPL"), make_bars("BTC-USD", seed=2), make_bars("AAPL", timeframe="1h", n=5)],
        ignore_index=True,
    ).sample(frac=1.0, random_state=4)
    store.write_bars(bars)
    for (symbol, timeframe), want in bars.groupby(["symbol", "timeframe"]):
        pd.testing.assert_frame_equal(
            store.read_bars(str(symbol), str(timeframe)),
            validate_bars(want.sort_values("ts", ignore_index=True)),
        )


_ROW = st.tuples(
    st.sampled_from(["AAPL", "BTC-USD", "X"]),
    st.sampled_from(["1m", "1h"]),
    st.integers(0, 40),
    st.floats(0.01, 1e6),
    st.floats(0.0, 1e9),
    st.one_of(st.none(), st.floats(0.01, 1e6)),
    st.one_of(st.none(), st.integers(0, 2**31 - 1)),
)


def _batch(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    unique = {(s, tf, i): (s, tf, i, *rest) for s, tf, i, *rest in rows}
    records = []
    for s, tf, i, price, volume, vwap, count in unique.values():
        step = pd.Timedelta(minutes=1) if tf == "1m" else pd.Timedelta(hours=1)
        records.append(
            {
                "symbol": s,
                "timeframe": tf,
                "ts": T0 + i * step,
                "open": price,
                "high": price * 1.5,
                "low": price / 2,
                "close": price,
                "volume": volume,
                "vwap": np.nan if vwap is None else vwap,
                "trade_count": pd.NA if count is None else count,
            }
        )
    frame = pd.DataFrame(records)
    frame["trade_count"] = frame["trade_count"].astype("Int64")
    return frame


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(writes=st.lists(st.lists(_ROW, min_size=1, max_size=25), min_size=1, max_size=4))
def test_any_sequence_of_writes_reads_back_the_last_value_of_each_bar(
    store: PostgresBarStore, engine: Engine, writes: list[list[tuple[Any, ...]]]
) -> None:
    with psycopg.connect(engine.url.set(drivername="postgresql").render_as_string(False)) as pg:
        pg.execute("TRUNCATE market_data_bars, symbol_metadata")
    latest: dict[tuple[str, str], pd.DataFrame] = {}
    for rows in writes:
        batch = _batch(rows)
        store.write_bars(batch)
        for (symbol, timeframe), part in batch.groupby(["symbol", "timeframe"]):
            key = (str(symbol), str(timeframe))
            merged = pd.concat([latest.get(key, part.iloc[:0]), part])
            latest[key] = merged.drop_duplicates("ts", keep="last")
    totals: dict[str, int] = {}
    for (symbol, timeframe), stored in latest.items():
        want = validate_bars(stored.sort_values("ts", ignore_index=True))
        pd.testing.assert_frame_equal(store.read_bars(symbol, timeframe), want)
        totals[symbol] = totals.get(symbol, 0) + len(want)
    meta = store.metadata()
    assert dict(zip(meta["symbol"], meta["total_bars_stored"], strict=True)) == totals
