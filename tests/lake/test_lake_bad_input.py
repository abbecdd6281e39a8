"""Bad input never reaches SQL and never changes a table: it raises `ValidationError`."""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest
from lake_helpers import (
    ANCHOR,
    CLICKHOUSE_URL,
    NO_SERVER,
    drop_server_lake,
    make_bars,
    server_lake_for,
    table_counts,
)

from tradeos_lab.errors import ValidationError
from tradeos_lab.settings import load_settings
from tradeos_lab.stores.lake import Lake, serve_gateway

BAD_SYMBOLS = [
    pytest.param("AAPL'; DROP TABLE bars_1m;--", id="sql-injection"),
    pytest.param("", id="empty"),
    pytest.param("A" * 10_000, id="10k-chars"),
    pytest.param("АAPL", id="cyrillic-look-alike"),
    pytest.param("AAPL\x00", id="nul-byte"),
    pytest.param(None, id="none"),
]

Call = Callable[[Lake, Any], object]

SYMBOL_CALLS: dict[str, Call] = {
    "read_bars": lambda lake, s: lake.read_bars(s, "1m"),
    "gaps": lambda lake, s: lake.gaps(s, "1m", ANCHOR, ANCHOR + pd.Timedelta(hours=1)),
    "record_gaps": lambda lake, s: lake.record_gaps(s, "1m", ANCHOR, ANCHOR + pd.Timedelta(1, "h")),
    "coverage": lambda lake, s: lake.coverage([s]),
    "resample": lambda lake, s: lake.resample([s], "1h"),
    "atr_regime": lambda lake, s: lake.atr_regime(s, "1m"),
    "volume_percentile": lambda lake, s: lake.volume_percentile(s, "1m"),
    "opening_range_breakout": lambda lake, s: lake.opening_range_breakout(s, "1m"),
    "gap_ledger": lambda lake, s: lake.gap_ledger(s or ""),  # None there means every symbol
    "write_bars": lambda lake, s: lake.write_bars(make_bars().assign(symbol=s)),
}


def load(lake: Lake) -> Lake:
    lake.write_bars(make_bars(periods=90))
    lake.record_gaps("AAPL", "1m", ANCHOR, ANCHOR + pd.Timedelta(hours=2))
    return lake


@pytest.fixture(scope="module")
def owner_and_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lake, Lake]]:
    """One loaded lake for the whole module (these tests prove nothing changes it), and a
    client over its gateway. Every test here uses it, so no other lake directory is open."""
    settings = load_settings(data_dir=tmp_path_factory.mktemp("bad-input"))
    token = secrets.token_urlsafe(24)
    with Lake.open(settings) as owner:
        load(owner)
        server = serve_gateway(owner, token)
        client = Lake.over_gateway(server.url, token)
        yield owner, client
        client.close()
        server.shutdown()


@pytest.fixture(scope="module")
def loaded_server() -> Iterator[Lake]:
    if not CLICKHOUSE_URL:
        pytest.skip(NO_SERVER)
    lake = server_lake_for(CLICKHOUSE_URL)
    try:
        yield load(lake)
    finally:
        drop_server_lake(lake)


@pytest.fixture(params=["chdb", "gateway", "server"])
def loaded(request: pytest.FixtureRequest) -> Lake:
    if request.param == "server":
        return request.getfixturevalue("loaded_server")  # type: ignore[no-any-return]
    owner, client = request.getfixturevalue("owner_and_client")
    return owner if request.param == "chdb" else client  # type: ignore[no-any-return]


@pytest.mark.parametrize("symbol", BAD_SYMBOLS)
@pytest.mark.parametrize("call", list(SYMBOL_CALLS), ids=list(SYMBOL_CALLS))
def test_bad_symbols_are_rejected_and_change_no_table(loaded: Lake, call: str, symbol: str) -> None:
    before = table_counts(loaded)

    with pytest.raises(ValidationError):
        SYMBOL_CALLS[call](loaded, symbol)

    assert table_counts(loaded) == before
    assert len(loaded.read_bars("AAPL", "1m")) == 90


@pytest.mark.parametrize("timeframe", ["2m", "1M", "60s", "", "1m; DROP TABLE bars_1m", None])
def test_unknown_timeframes_are_rejected(loaded: Lake, timeframe: Any) -> None:
    before = table_counts(loaded)

    for call in (
        lambda: loaded.read_bars("AAPL", timeframe),
        lambda: loaded.gaps("AAPL", timeframe, ANCHOR, ANCHOR + pd.Timedelta(hours=1)),
        lambda: loaded.atr_regime("AAPL", timeframe),
        lambda: loaded.resample("AAPL", timeframe),
        lambda: loaded.write_bars(make_bars().assign(timeframe=timeframe)),
    ):
        with pytest.raises(ValidationError, match="timeframe"):
            call()

    assert table_counts(loaded) == before


def test_start_after_end_is_rejected(loaded: Lake) -> None:
    later, earlier = ANCHOR + pd.Timedelta(hours=1), ANCHOR
    for call in (
        lambda: loaded.read_bars("AAPL", "1m", later, earlier),
        lambda: loaded.gaps("AAPL", "1m", later, earlier),
        lambda: loaded.record_gaps("AAPL", "1m", later, earlier),
        lambda: loaded.resample("AAPL", "1h", start=later, end=earlier),
        lambda: loaded.atr_regime("AAPL", "1m", later, earlier),
        lambda: loaded.volume_percentile("AAPL", "1m", later, earlier),
        lambda: loaded.opening_range_breakout("AAPL", "1m", later, earlier),
    ):
        with pytest.raises(ValidationError, match="after end"):
            call()


@pytest.mark.parametrize("bound", ["not a date", 12345, math.nan, pd.NaT, True])
def test_unreadable_bounds_are_rejected(loaded: Lake, bound: Any) -> None:
    with pytest.raises(ValidationError):
        loaded.read_bars("AAPL", "1m", start=bound)


BAD_BARS = {
    "nan-close": lambda b: b.assign(close=b["close"].where(b.index != 3, math.nan)),
    "inf-high": lambda b: b.assign(high=b["high"].where(b.index != 3, math.inf)),
    "negative-volume": lambda b: b.assign(volume=b["volume"].where(b.index != 3, -1.0)),
    "negative-price": lambda b: b.assign(low=b["low"].where(b.index != 3, -5.0)),
    "high-below-low": lambda b: b.assign(high=b["low"] - 1),
    "off-grid-ts": lambda b: b.assign(ts=b["ts"] + pd.Timedelta(seconds=7)),
    "duplicate-bars": lambda b: pd.concat([b, b.iloc[[0]]]),
    "missing-column": lambda b: b.drop(columns=["close"]),
}


@pytest.mark.parametrize("spoil", list(BAD_BARS), ids=list(BAD_BARS))
def test_bad_bars_are_rejected_whole_and_change_no_table(loaded: Lake, spoil: str) -> None:
    before = table_counts(loaded)
    fresh = make_bars(start=ANCHOR + pd.Timedelta(days=1), periods=10, seed=9)

    with pytest.raises(ValidationError):
        loaded.write_bars(BAD_BARS[spoil](fresh))

    assert table_counts(loaded) == before
    assert loaded.read_bars("AAPL", "1m", start=ANCHOR + pd.Timedelta(days=1)).empty


def test_injection_text_in_a_bound_parameter_is_only_a_value(loaded: Lake) -> None:
    evil = "AAPL'; DROP TABLE bars_1m;--"

    frame = loaded.query(
        "SELECT {s:String} AS s, count() AS n FROM bars_1m WHERE symbol = {s:String}", {"s": evil}
    )

    assert frame.to_dict("records") == [{"s": evil, "n": 0}]
    assert len(loaded.read_bars("AAPL", "1m")) == 90


def test_unbindable_parameters_are_rejected(loaded: Lake) -> None:
    with pytest.raises(ValidationError):
        loaded.query("SELECT {x:UInt8} AS x", {"x": "not a number"})
    with pytest.raises(ValidationError):
        loaded.query("SELECT 1", {"bad name": 1})
    with pytest.raises(ValidationError):
        loaded.query("SELECT 1", {"x": object()})


@pytest.mark.parametrize("name", ["bars_1m; DROP TABLE x", "a b", "", "x`y", "1abc"])
def test_insert_df_rejects_table_names_that_are_not_identifiers(loaded: Lake, name: str) -> None:
    with pytest.raises(ValidationError):
        loaded.insert_df(name, pd.DataFrame({"a": [1]}))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 0}, "window"),
        ({"window": 2.5}, "window"),
        ({"lookback": 10**9}, "lookback"),
        ({"low": 0.8, "high": 0.2}, "thresholds"),
    ],
)
def test_feature_parameters_are_checked(loaded: Lake, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        loaded.atr_regime("AAPL", "1m", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"session_open": "9:30"}, "HH:MM"),
        ({"session_open": "25:00"}, "HH:MM"),
        ({"tz": "Mars/Olympus"}, "time zone"),
        ({"tz": "UTC'; DROP TABLE x;--"}, "time zone"),
        ({"range_minutes": 7, "timeframe": "5m"}, "whole number"),
        ({"session_open": "23:50", "range_minutes": 30}, "before the session closes"),
    ],
)
def test_opening_range_parameters_are_checked(
    loaded: Lake, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValidationError, match=match):
        loaded.opening_range_breakout("AAPL", **kwargs)
