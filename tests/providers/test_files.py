"""File replay: CSV and Parquet bars round-trip, header variants load, bad files fail loudly."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from provider_servers import utc

from tradeos_lab.bars import BAR_COLUMNS
from tradeos_lab.errors import ProviderError, SymbolError, ValidationError
from tradeos_lab.providers import (
    BarProvider,
    FileReplayProvider,
    SyntheticProvider,
    read_bar_file,
    save_bars,
)
from tradeos_lab.symbols import validate_symbol


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    provider = SyntheticProvider(seed=11)
    return pd.concat(
        [
            provider.fetch_bars("AAPL", "5m", utc(2024, 2, 1), utc(2024, 2, 3)),
            provider.fetch_bars("BTC/USD", "1h", utc(2024, 2, 1), utc(2024, 2, 8)),
        ],
        ignore_index=True,
    )


def test_it_is_a_bar_provider(tmp_path: Path) -> None:
    assert isinstance(FileReplayProvider(tmp_path / "bars.csv"), BarProvider)


@pytest.mark.parametrize("name", ["bars.csv", "bars.csv.gz", "bars.parquet"])
def test_saved_bars_replay_unchanged(tmp_path: Path, bars: pd.DataFrame, name: str) -> None:
    replay = FileReplayProvider(save_bars(bars, tmp_path / name))
    for symbol, timeframe, start, end in [
        ("AAPL", "5m", utc(2024, 2, 1), utc(2024, 2, 3)),
        ("BTC/USD", "1h", utc(2024, 2, 1), utc(2024, 2, 8)),
        ("BTC/USD", "1h", utc(2024, 2, 3, 7, 30), utc(2024, 2, 4, 12)),
    ]:
        got = replay.fetch_bars(symbol, timeframe, start, end)
        want = bars.loc[
            (bars["symbol"] == validate_symbol(symbol))
            & (bars["timeframe"] == timeframe)
            & (bars["ts"] >= pd.Timestamp(start))
            & (bars["ts"] < pd.Timestamp(end))
        ].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, check_exact=name.endswith("parquet"))


def test_common_header_variants_load(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "Timestamp,Open,High,Low,Close,Volume\n"
        "2024-01-02T14:30:00Z,10.0,11.0,9.5,10.5,100\n"
        "2024-01-02T14:31:00Z,10.5,10.8,10.1,10.2,80\n"
    )
    bars = FileReplayProvider(path, symbol="AAPL", timeframe="1m").fetch_bars(
        "AAPL", "1m", utc(2024, 1, 2), utc(2024, 1, 3)
    )
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert list(bars["close"]) == [10.5, 10.2]
    assert bars["ts"].iloc[0] == pd.Timestamp("2024-01-02T14:30:00Z")


@pytest.mark.parametrize(
    "stamps",
    [
        ["1704205800", "1704205860"],  # epoch seconds
        ["1704205800000", "1704205860000"],  # epoch milliseconds
        ["2024-01-02 14:30:00", "2024-01-02 14:31:00"],  # naive: UTC
    ],
)
def test_timestamps_in_epoch_or_naive_form_are_utc(tmp_path: Path, stamps: list[str]) -> None:
    path = tmp_path / "bars.csv"
    rows = "\n".join(f"{s},AAPL,1m,10,11,9,10,5,,3" for s in stamps)
    path.write_text("time,ticker,interval,o,h,l,c,v,vw,n\n" + rows + "\n")
    bars = read_bar_file(path)
    assert list(bars["ts"]) == [
        pd.Timestamp("2024-01-02T14:30:00Z"),
        pd.Timestamp("2024-01-02T14:31:00Z"),
    ]
    assert list(bars["trade_count"]) == [3, 3]


def test_daily_dates_load(tmp_path: Path) -> None:
    path = tmp_path / "daily.csv"
    path.write_text(
        "date,open,high,low,close,volume\n2024-01-02,1,2,1,2,10\n2024-01-03,2,3,1,2,10\n"
    )
    bars = FileReplayProvider(path, symbol="SPY", timeframe="1d").fetch_bars(
        "SPY", "1d", utc(2024, 1, 1), utc(2024, 2, 1)
    )
    assert len(bars) == 2


def test_a_series_the_file_does_not_hold_is_an_error_not_an_empty_frame(
    tmp_path: Path, bars: pd.DataFrame
) -> None:
    replay = FileReplayProvider(save_bars(bars, tmp_path / "bars.parquet"))
    with pytest.raises(
        ProviderError, match=r"holds no MSFT 5m bars \(it holds: AAPL 5m, BTC-USD 1h\)"
    ):
        replay.fetch_bars("MSFT", "5m", utc(2024, 2, 1), utc(2024, 2, 2))
    with pytest.raises(ProviderError, match="holds no AAPL 1h"):
        replay.fetch_bars("AAPL", "1h", utc(2024, 2, 1), utc(2024, 2, 2))


def test_a_range_outside_the_file_is_an_empty_frame(tmp_path: Path, bars: pd.DataFrame) -> None:
    replay = FileReplayProvider(save_bars(bars, tmp_path / "bars.csv"))
    got = replay.fetch_bars("AAPL", "5m", utc(2023, 1, 1), utc(2023, 2, 1))
    assert got.empty
    assert list(got.columns) == list(BAR_COLUMNS)


def test_a_changed_file_is_read_again(tmp_path: Path, bars: pd.DataFrame) -> None:
    path = tmp_path / "bars.parquet"
    aapl = bars.loc[bars["symbol"] == "AAPL"]
    replay = FileReplayProvider(save_bars(aapl.iloc[:10], path))
    assert len(replay.fetch_bars("AAPL", "5m", utc(2024, 2, 1), utc(2024, 2, 3))) == 10
    save_bars(aapl.iloc[:20], path)
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1_000_000_000))
    assert len(replay.fetch_bars("AAPL", "5m", utc(2024, 2, 1), utc(2024, 2, 3))) == 20


def test_invalid_rows_are_rejected_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text(
        "ts,symbol,timeframe,open,high,low,close,volume\n2024-01-02T14:30:00Z,AAPL,1m,10,9,11,10,5\n"
    )
    with pytest.raises(ValidationError, match=r"broken\.csv: bars have high < low"):
        FileReplayProvider(path).fetch_bars("AAPL", "1m", utc(2024, 1, 1), utc(2024, 1, 3))


def test_missing_columns_are_named_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_text("ts,open,high,low,close,volume\n2024-01-02T14:30:00Z,10,11,9,10,5\n")
    with pytest.raises(ValidationError, match=r"lacks columns \['symbol', 'timeframe'\].*symbol="):
        FileReplayProvider(path).fetch_bars("AAPL", "1m", utc(2024, 1, 1), utc(2024, 1, 3))


def test_a_missing_file_and_an_unknown_type_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="does not exist"):
        FileReplayProvider(tmp_path / "nope.csv").fetch_bars(
            "AAPL", "1m", utc(2024, 1, 1), utc(2024, 1, 3)
        )
    with pytest.raises(ValidationError, match="unknown bar file type"):
        FileReplayProvider(tmp_path / "bars.xlsx")


def test_bad_input_is_rejected_before_the_file_is_read(tmp_path: Path) -> None:
    replay = FileReplayProvider(tmp_path / "absent.csv")
    with pytest.raises(SymbolError):
        replay.fetch_bars("AAPL'; DROP TABLE x;--", "1m", utc(2024, 1, 1), utc(2024, 1, 3))
    with pytest.raises(ValidationError, match="unknown timeframe"):
        replay.fetch_bars("AAPL", "3m", utc(2024, 1, 1), utc(2024, 1, 3))
    with pytest.raises(ValidationError, match="must be before end"):
        replay.fetch_bars("AAPL", "1m", utc(2024, 1, 3), utc(2024, 1, 1))
