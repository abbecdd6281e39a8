"""Bars in and out of the lake: the BarStore contract, idempotent ingest, reads before merges."""

from __future__ import annotations

import pandas as pd
import pytest
from lake_helpers import ANCHOR, make_bars

from tradeos_lab.bars import BarStore, empty_bars, validate_bars
from tradeos_lab.stores.lake import Lake


def test_lake_implements_the_bar_store_protocol(lake: Lake) -> None:
    assert isinstance(lake, BarStore)


def test_written_bars_read_back_identical_with_bar_frame_dtypes(any_lake: Lake) -> None:
    bars = make_bars(periods=90)
    assert any_lake.write_bars(bars) == 90

    got = any_lake.read_bars("AAPL", "1m")

    pd.testing.assert_frame_equal(got, validate_bars(bars))
    assert got.dtypes.equals(empty_bars().dtypes)


def test_loading_the_same_bars_twice_stores_them_once_before_any_merge(any_lake: Lake) -> None:
    bars = make_bars(periods=200)
    for table in ("bars_1m", "bars_5m", "bars_1h"):
        any_lake.command(f"SYSTEM STOP MERGES {table}")
    any_lake.write_bars(bars)
    any_lake.write_bars(bars)

    # Both copies are physically there (merges are stopped), yet every read sees one.
    raw = any_lake.query(
        "SELECT count() AS n FROM bars_1m WHERE symbol = {s:String}", {"s": "AAPL"}
    )
    assert int(raw["n"].iloc[0]) == 400
    assert len(any_lake.read_bars("AAPL", "1m")) == 200
    assert len(any_lake.read_bars("AAPL", "5m")) == 40
    coverage = any_lake.coverage(["AAPL"]).set_index("timeframe")
    assert coverage.loc["1m", "bars"] == 200
    assert coverage.loc["5m", "bars"] == 40
    hourly = any_lake.read_bars("AAPL", "1h")
    assert hourly["volume"].sum() == pytest.approx(bars["volume"].sum())
    for table in ("bars_1m", "bars_5m", "bars_1h"):
        any_lake.command(f"SYSTEM START MERGES {table}")


def test_a_corrected_bar_replaces_the_earlier_one(any_lake: Lake) -> None:
    bars = make_bars(periods=10)
    any_lake.write_bars(bars)
    fixed = bars.iloc[[4]].copy()
    fixed["volume"] = 12345.0
    any_lake.write_bars(fixed)

    got = any_lake.read_bars("AAPL", "1m")

    assert len(got) == 10
    assert got.loc[4, "volume"] == 12345.0
    assert any_lake.read_bars("AAPL", "5m")["volume"].iloc[0] == pytest.approx(
        bars["volume"].iloc[:5].sum() - bars["volume"].iloc[4] + 12345.0
    )


def test_read_is_half_open_and_limit_returns_the_latest_bars_oldest_first(lake: Lake) -> None:
    bars = make_bars(periods=60)
    lake.write_bars(bars)

    window = lake.read_bars(
        "AAPL", "1m", ANCHOR + pd.Timedelta(minutes=10), ANCHOR + pd.Timedelta(minutes=20)
    )
    latest = lake.read_bars("AAPL", "1m", limit=5)

    assert list(window["ts"]) == list(bars["ts"].iloc[10:20])
    assert list(latest["ts"]) == list(bars["ts"].iloc[-5:])
    assert lake.read_bars("AAPL", "1m", limit=1000).equals(lake.read_bars("AAPL", "1m"))


def test_naive_datetimes_are_read_as_utc(lake: Lake) -> None:
    lake.write_bars(make_bars(periods=30))
    naive = (ANCHOR + pd.Timedelta(minutes=5)).tz_localize(None).to_pydatetime()

    assert len(lake.read_bars("AAPL", "1m", start=naive)) == 25


def test_unknown_symbols_read_as_an_empty_bar_frame(any_lake: Lake) -> None:
    got = any_lake.read_bars("MSFT", "1h")

    assert got.empty
    assert got.dtypes.equals(empty_bars().dtypes)


def test_missing_vwap_and_trade_count_survive_the_round_trip(lake: Lake) -> None:
    bars = make_bars(periods=10, vwap=False, trade_count=False)
    lake.write_bars(bars)

    got = lake.read_bars("AAPL", "1m")

    assert got["vwap"].isna().all()
    assert got["trade_count"].isna().all()
    assert got["trade_count"].dtype == "Int64"


def test_coverage_reports_every_tier_per_symbol(any_lake: Lake) -> None:
    any_lake.write_bars(make_bars("AAPL", periods=120))
    any_lake.write_bars(make_bars("BTC-USD", periods=60, seed=3))

    coverage = any_lake.coverage()

    assert list(coverage.columns) == ["symbol", "timeframe", "earliest", "latest", "bars"]
    aapl = coverage[coverage["symbol"] == "AAPL"].set_index("timeframe")
    assert list(aapl.index) == ["1m", "5m", "15m", "1h", "1d"]
    assert aapl.loc["1m", "earliest"] == ANCHOR
    assert aapl.loc["1m", "latest"] == ANCHOR + pd.Timedelta(minutes=119)
    assert aapl.loc["1h", "bars"] == 2
    only_btc = any_lake.coverage(["BTC-USD"])
    assert set(only_btc["symbol"]) == {"BTC-USD"}


def test_query_binds_parameters_and_returns_a_dataframe(any_lake: Lake) -> None:
    any_lake.write_bars(make_bars(periods=30))

    frame = any_lake.query(
        "SELECT symbol, count() AS n, max(ts) AS last FROM bars_1m FINAL "
        "WHERE symbol IN {symbols:Array(String)} AND ts >= {start:DateTime64(6, 'UTC')} "
        "GROUP BY symbol",
        {"symbols": ["AAPL", "MSFT"], "start": ANCHOR + pd.Timedelta(minutes=10)},
    )

    assert frame.to_dict("records") == [
        {"symbol": "AAPL", "n": 20, "last": ANCHOR + pd.Timedelta(minutes=29)}
    ]


def test_insert_df_and_command_work_on_tables_of_our_own(any_lake: Lake) -> None:
    any_lake.command(
        "CREATE TABLE notes (id UInt32, text String, at DateTime64(3, 'UTC')) "
        "ENGINE = MergeTree ORDER BY id"
    )
    frame = pd.DataFrame(
        {
            "id": [1, 2],
            "text": ["a'b", "c\\d"],
            "at": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True),
        }
    )

    assert any_lake.insert_df("notes", frame) == 2
    back = any_lake.query("SELECT id, text, at FROM notes ORDER BY id")

    assert back["text"].tolist() == ["a'b", "c\\d"]
    assert back["at"].tolist() == frame["at"].tolist()
