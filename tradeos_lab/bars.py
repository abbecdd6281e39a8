"""The bar frame every store, provider and backtest exchanges, and its validation.

A bar frame is a pandas DataFrame with the columns of `BAR_COLUMNS` and the dtypes of
`BAR_DTYPES`: `ts` is the bar's open time as a tz-aware UTC timestamp; `vwap` and `trade_count`
may be missing. `validate_bars` is the one gate between outside data and a store: it rejects
instead of repairing, so tables stay unchanged. Every store builds the frames it reads with
`bar_strings` and `empty_bars`, so a bar frame has the same dtypes whichever store it came from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from numbers import Real
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from tradeos_lab.errors import ValidationError
from tradeos_lab.symbols import Timeframe, validate_symbol

BAR_COLUMNS = (
    "symbol",
    "timeframe",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "vwap",
    "trade_count",
)
PRICE_COLUMNS = ("open", "high", "low", "close")
BAR_STRING_DTYPE = pd.StringDtype(na_value=np.nan)
"""The dtype of `symbol` and `timeframe`: pandas' default string dtype (`str`), the one a frame
built by hand gets, so bars written and read back compare equal on every store."""
BAR_DTYPES: dict[str, Any] = {
    "symbol": BAR_STRING_DTYPE,
    "timeframe": BAR_STRING_DTYPE,
    "ts": "datetime64[ns, UTC]",
    **dict.fromkeys((*PRICE_COLUMNS, "volume", "vwap"), "float64"),
    "trade_count": "Int64",
}
#: Bounds an open-ended range is clamped to (pandas' nanosecond timestamps end in 2262).
EARLIEST = pd.Timestamp("1970-01-01", tz="UTC")
LATEST = pd.Timestamp("2200-01-01", tz="UTC")


def utc_timestamp(value: object, name: str) -> pd.Timestamp:
    """A UTC timestamp from a datetime, ISO string or datetime64; naive values are taken as UTC."""
    if isinstance(value, bool) or not isinstance(
        value, datetime | str | pd.Timestamp | np.datetime64
    ):
        raise ValidationError(f"{name} must be a datetime, got {type(value).__name__}")
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as e:
        raise ValidationError(f"{name} {value!r} is not a timestamp: {e}") from None
    if pd.isna(ts):
        raise ValidationError(f"{name} is missing")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def bar_span(start: object, end: object) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) in UTC for a bar query: open ends become `EARLIEST`/`LATEST`, and a start
    after the end is refused before any store is asked."""
    lo = EARLIEST if start is None else utc_timestamp(start, "start")
    hi = LATEST if end is None else utc_timestamp(end, "end")
    if lo > hi:
        raise ValidationError(f"start {lo.isoformat()} is after end {hi.isoformat()}")
    return max(lo, EARLIEST), min(hi, LATEST)


def empty_bars() -> pd.DataFrame:
    """A bar frame with no rows and the right dtypes (a copy of one template: building it from
    typed Series costs ~1.5 ms, a copy ~30 us, and every cache miss returns one)."""
    return _empty_bars_template().copy(deep=True)


def bar_strings(values: Sequence[Any] | np.ndarray) -> pd.api.extensions.ExtensionArray:
    """A `symbol` or `timeframe` column of a bar frame, in `BAR_STRING_DTYPE`."""
    return pd.array(values, dtype=BAR_STRING_DTYPE)


@lru_cache(maxsize=1)
def _empty_bars_template() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=dtype) for c, dtype in BAR_DTYPES.items()})


def validate_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a normalised copy of `frame` or raise `ValidationError` saying what is wrong.

    Rejects: missing columns, invalid symbols or timeframes, timestamps that are not on the
    timeframe's grid, NaN/inf or non-positive prices, negative volumes, high < low, open/close
    outside [low, high], duplicate (symbol, timeframe, ts).
    """
    missing = [c for c in BAR_COLUMNS[:8] if c not in frame.columns]
    if missing:
        raise ValidationError(f"bars are missing columns {missing}")
    out = frame.loc[:, [c for c in BAR_COLUMNS if c in frame.columns]].copy()
    if out.empty:
        return empty_bars()
    symbols = out["symbol"].unique()
    for symbol in symbols:
        validate_symbol(symbol)
    timeframes = [Timeframe.parse(tf) for tf in out["timeframe"].unique()]
    out["symbol"] = out["symbol"].astype(BAR_STRING_DTYPE)
    out["timeframe"] = out["timeframe"].astype(BAR_STRING_DTYPE)
    out["ts"] = _utc(out["ts"])
    _check_prices(out)
    out["vwap"] = (
        pd.to_numeric(out["vwap"], errors="raise").astype("float64") if "vwap" in out else np.nan
    )
    if "trade_count" in out:
        counts = pd.to_numeric(out["trade_count"], errors="raise")
        if (counts.dropna() < 0).any():
            raise ValidationError("bars have a negative trade_count")
        out["trade_count"] = counts.astype("Int64")
    else:
        out["trade_count"] = pd.arrays.IntegerArray(
            np.zeros(len(out), dtype="int64"), np.ones(len(out), dtype=bool)
        )
    for tf in timeframes:
        rows = out["timeframe"] == tf.value
        stamps = out.loc[rows, "ts"].astype("int64") // 1_000_000_000
        if (stamps % tf.seconds != 0).any():
            raise ValidationError(f"{tf.value} bars have timestamps off the {tf.value} grid")
    if _has_duplicates(out, single_series=len(symbols) == 1 and len(timeframes) == 1):
        raise ValidationError("bars have duplicate (symbol, timeframe, ts) rows")
    return out.reset_index(drop=True)


def validate_bar(symbol: object, timeframe: object, bar: Mapping[str, Any]) -> dict[str, Any]:
    """One bar checked by the rules of `validate_bars`, without building a frame: the live path
    appends bars one at a time, where a DataFrame per bar would cost milliseconds.

    `bar` has ts, open, high, low, close, volume and optionally vwap and trade_count. Returns them
    normalised: `ts` a UTC timestamp, floats, `vwap` NaN and `trade_count` None when missing.
    """
    fields = set(BAR_COLUMNS[2:])
    unknown = sorted(set(bar) - fields)
    if unknown:
        raise ValidationError(f"unknown bar fields {unknown}")
    missing = [c for c in BAR_COLUMNS[2:8] if c not in bar]
    if missing:
        raise ValidationError(f"bar is missing {missing}")
    tf = Timeframe.parse(timeframe)
    ts = utc_timestamp(bar["ts"], "ts")
    if ts.value % (tf.seconds * 1_000_000_000):
        raise ValidationError(f"{tf.value} bar at {ts.isoformat()} is off the {tf.value} grid")
    out: dict[str, Any] = {"symbol": validate_symbol(symbol), "timeframe": tf.value, "ts": ts}
    for col in (*PRICE_COLUMNS, "volume"):
        out[col] = _finite_number(bar[col], col)
    if out["volume"] < 0:
        raise ValidationError("bar has a negative volume")
    if min(out[c] for c in PRICE_COLUMNS) <= 0:
        raise ValidationError("bar has a zero or negative price")
    if out["high"] < out["low"]:
        raise ValidationError("bar has high < low")
    for col in ("open", "close"):
        if not out["low"] <= out[col] <= out["high"]:
            raise ValidationError(f"bar has {col} outside [low, high]")
    vwap = bar.get("vwap")
    out["vwap"] = math.nan if vwap is None else _finite_number(vwap, "vwap", allow_nan=True)
    count = bar.get("trade_count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int | np.integer)):
        raise ValidationError(f"trade_count must be an integer, got {type(count).__name__}")
    if count is not None and count < 0:
        raise ValidationError("bar has a negative trade_count")
    out["trade_count"] = None if count is None else int(count)
    return out


def _finite_number(value: object, name: str, *, allow_nan: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValidationError(f"bar {name} must be a number, got {type(value).__name__}")
    number = float(value)
    if math.isnan(number) and allow_nan:
        return number
    if not math.isfinite(number):
        raise ValidationError(f"bar has NaN or infinite {name}")
    return number


def _check_prices(out: pd.DataFrame) -> None:
    """Finite, positive prices and non-negative volumes forming a consistent OHLC; in place."""
    for col in (*PRICE_COLUMNS, "volume"):
        out[col] = _finite(out[col], col)
        if (out[col] < 0).any():
            raise ValidationError(f"bars have negative {col}")
    if (out.loc[:, list(PRICE_COLUMNS)] <= 0).any().any():
        raise ValidationError("bars have a zero price")
    if (out["high"] < out["low"]).any():
        raise ValidationError("bars have high < low")
    for col in ("open", "close"):
        if ((out[col] > out["high"]) | (out[col] < out["low"])).any():
            raise ValidationError(f"bars have {col} outside [low, high]")


def _has_duplicates(out: pd.DataFrame, *, single_series: bool) -> bool:
    """Duplicate (symbol, timeframe, ts) rows. Bars usually arrive ordered by series and time,
    so one pass over a combined integer key settles it; only unordered input is sorted."""
    seconds = out["ts"].array.asi8 // 1_000_000_000
    if single_series:
        keys = seconds
    else:
        symbol, _ = pd.factorize(out["symbol"])
        timeframe, _ = pd.factorize(out["timeframe"])
        series = symbol.astype("int64") * len(Timeframe) + timeframe
        keys = series << 34 | seconds  # 2**34 s reaches past the year 2500
    if (np.diff(keys) > 0).all():
        return False
    return bool((np.diff(np.sort(keys)) == 0).any())


def _utc(values: pd.Series) -> pd.Series:
    try:
        ts = pd.to_datetime(values, utc=True)
    except (ValueError, TypeError) as e:
        raise ValidationError(f"bars have unparseable timestamps: {e}") from None
    if ts.isna().any():
        raise ValidationError("bars have missing timestamps")
    return ts.astype("datetime64[ns, UTC]")


def _finite(values: pd.Series, name: str) -> pd.Series:
    try:
        numbers = pd.to_numeric(values, errors="raise").astype("float64")
    except (ValueError, TypeError):
        raise ValidationError(f"bars have a non-numeric {name}") from None
    if not np.isfinite(numbers.to_numpy()).all():
        raise ValidationError(f"bars have NaN or infinite {name}")
    return numbers


@runtime_checkable
class BarSource(Protocol):
    """What a backtest reads bars from: every bar store, and the three-tier `BarReader`."""

    def read_bars(
        self,
        symbol: str,
        timeframe: Timeframe | str,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Bars in [start, end), oldest first; with `limit`, the latest `limit` of them."""
        ...


@runtime_checkable
class BarStore(BarSource, Protocol):
    """Where bars live for research and backtests: one protocol, so the backtester never changes.

    The lake (ClickHouse/chdb) and the Postgres/Timescale store both implement it, so swapping
    one for the other changes no caller.
    """

    def write_bars(self, bars: pd.DataFrame) -> int:
        """Validate and store bars idempotently; returns the number of rows given."""
        ...

    def gaps(
        self, symbol: str, timeframe: Timeframe | str, start: datetime, end: datetime
    ) -> pd.DataFrame:
        """Missing intervals in [start, end): columns gap_start, gap_end, missing_bars."""
        ...

    def coverage(self, symbols: Iterable[str] | None = None) -> pd.DataFrame:
        """Per symbol and timeframe: earliest, latest, bars (what the monitoring queries read)."""
        ...
