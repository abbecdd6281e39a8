"""The bars a backtest runs on: read from any bar source or taken from a frame, hashed, aligned.

`load_bars` is the one place a backtest gets bars: a bar frame (long, with a `symbol` column, or
one symbol's bars without it) or anything with the bar-store `read_bars` (the lake, the
PostgreSQL bar store, the three-tier `BarReader`), so changing the source changes no backtest
code. `Market` puts the symbols side by side on the union of their times and evaluates a
strategy's rule there through the batch form (`tradeos_lab.strategies.batch.rule_masks`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from tradeos_lab.bars import BAR_STRING_DTYPE, BarSource, bar_span
from tradeos_lab.errors import ValidationError
from tradeos_lab.strategies.base import BAR_FIELDS, Strategy
from tradeos_lab.strategies.batch import SIGNAL_MASKS, BarValues, rule_masks
from tradeos_lab.symbols import Timeframe, validate_symbol

PRICES = ("close", "open", "high", "low")
"""The price arrays a backtest simulates on."""
DEFAULT_SYMBOL = "ASSET"
"""The symbol a frame of one symbol's bars without a `symbol` column is backtested under."""


@dataclass(frozen=True)
class BarSet:
    """The bars of one run (a long frame sorted by symbol and time) and where they came from."""

    bars: pd.DataFrame
    source: str
    timeframe: Timeframe | None

    @cached_property
    def symbols(self) -> tuple[str, ...]:
        column = self.bars["symbol"]
        if column.iloc[0] == column.iloc[-1]:  # sorted by symbol: one symbol, read in O(1)
            return (str(column.iloc[0]),)
        return tuple(str(s) for s in column.unique())

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.bars["ts"].min())

    @property
    def end(self) -> pd.Timestamp:
        """The end of the last bar (its open time plus one timeframe, or the open time)."""
        last = pd.Timestamp(self.bars["ts"].max())
        return last + pd.Timedelta(seconds=self.timeframe.seconds) if self.timeframe else last

    @cached_property
    def data_hash(self) -> str:
        """SHA-256 of symbol, time and OHLCV of every bar: the same bars give the same hash
        whichever store they were read from."""
        columns = self.bars.loc[:, ["symbol", "ts", *BAR_FIELDS]]
        rows = pd.util.hash_pandas_object(columns, index=False).to_numpy()
        return hashlib.sha256(rows.tobytes()).hexdigest()

    def window(self, start: pd.Timestamp, end: pd.Timestamp) -> BarSet:
        """The bars with start <= ts < end (a walk-forward window)."""
        ts = self.bars["ts"]
        part = self.bars.loc[(ts >= start) & (ts < end)].reset_index(drop=True)
        if part.empty:
            raise ValidationError(f"no bars in [{start.isoformat()}, {end.isoformat()})")
        return BarSet(part, self.source, self.timeframe)


def load_bars(
    bars: pd.DataFrame | BarSource | BarSet,
    *,
    symbols: str | Sequence[str] | None = None,
    timeframe: Timeframe | str | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
) -> BarSet:
    """The bars of `symbols` in [start, end) from a frame or a bar source.

    A source needs `symbols` and `timeframe`; a frame is filtered by whatever is given.
    """
    if isinstance(bars, BarSet):
        return bars
    wanted = _symbols(symbols)
    tf = None if timeframe is None else Timeframe.parse(timeframe)
    if isinstance(bars, pd.DataFrame):
        frame, source = _from_frame(bars, wanted, tf), "dataframe"
    elif isinstance(bars, BarSource):
        if not wanted or tf is None:
            raise ValidationError("reading from a bar source needs symbols and a timeframe")
        lo, hi = bar_span(start, end)
        parts = [bars.read_bars(s, tf, lo.to_pydatetime(), hi.to_pydatetime()) for s in wanted]
        empty = [s for s, part in zip(wanted, parts, strict=True) if part.empty]
        if empty:
            raise ValidationError(f"the bar source has no {tf.value} bars of {empty} in range")
        frame, source = pd.concat(parts, ignore_index=True), type(bars).__name__
    else:
        raise ValidationError(
            f"bars must be a bar frame or a bar source (read_bars), got {type(bars).__name__}"
        )
    if start is not None or end is not None:
        lo, hi = bar_span(start, end)
        frame = frame.loc[(frame["ts"] >= lo) & (frame["ts"] < hi)]
    if frame.empty:
        raise ValidationError("no bars to backtest in the range asked for")
    if tf is None and "timeframe" in frame.columns:
        tf = _timeframe_of(frame["timeframe"])
    symbol = frame["symbol"]
    one_series = frame["ts"].is_monotonic_increasing and bool((symbol == symbol.iloc[0]).all())
    if not one_series:  # the sort costs ~30 ms per 100k bars; one symbol's bars come in order
        frame = frame.sort_values(["symbol", "ts"], kind="stable")
    frame = frame.reset_index(drop=True)
    return BarSet(frame, source, tf)


def _timeframe_of(column: pd.Series) -> Timeframe | None:
    """The one timeframe a frame's bars are of (None when the column holds none)."""
    first = column.iloc[0]
    if isinstance(first, str) and bool((column == first).all()):
        found = [first]  # one timeframe: a comparison costs less than `unique` (~1 ms)
    else:
        found = [tf for tf in column.unique() if isinstance(tf, str)]
    if len(found) > 1:
        raise ValidationError(f"bars mix timeframes {sorted(found)}; pick one")
    return Timeframe.parse(found[0]) if found else None


def _symbols(symbols: str | Sequence[str] | None) -> tuple[str, ...]:
    if symbols is None:
        return ()
    named = (symbols,) if isinstance(symbols, str) else tuple(symbols)
    return tuple(dict.fromkeys(validate_symbol(s) for s in named))


def _from_frame(bars: pd.DataFrame, wanted: tuple[str, ...], tf: Timeframe | None) -> pd.DataFrame:
    missing = [c for c in ("ts", *BAR_FIELDS) if c not in bars.columns]
    if missing:
        raise ValidationError(f"bars are missing columns {missing}")
    frame = bars  # copied only when a column must change: a bar frame from a store is used as is
    if "symbol" not in frame.columns:
        if len(wanted) > 1:
            raise ValidationError("bars without a symbol column are one symbol's bars")
        frame = frame.assign(symbol=wanted[0] if wanted else DEFAULT_SYMBOL)
    if frame["symbol"].dtype != BAR_STRING_DTYPE:
        frame = frame.assign(symbol=frame["symbol"].astype(BAR_STRING_DTYPE))
    if not _utc_times(frame["ts"]):
        frame = frame.assign(ts=pd.to_datetime(frame["ts"], utc=True))
    if wanted:
        absent = sorted(set(wanted) - set(frame["symbol"].unique()))
        if absent:
            raise ValidationError(f"no bars of {absent} in the frame")
        frame = frame.loc[frame["symbol"].isin(wanted)]
    if tf is not None and "timeframe" in frame.columns:
        frame = frame.loc[frame["timeframe"] == tf.value]
    return frame


def _utc_times(ts: pd.Series) -> bool:
    """Whether `ts` holds UTC times already (in any unit: a frame built by hand has microseconds,
    a store's nanoseconds), so the column is used as it is."""
    dtype = ts.dtype
    return isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC"


@dataclass(frozen=True)
class Market:
    """The symbols of a `BarSet` side by side on the union of their bar times.

    `close` is carried forward over a symbol's missing bars (valued at its last close), and
    open/high/low are the close there, so stops never trigger on a bar a symbol did not have;
    the signal masks are False there.
    """

    barset: BarSet
    index: pd.DatetimeIndex
    symbols: tuple[str, ...]
    rows: tuple[np.ndarray | slice, ...]
    """Per symbol, its bars' rows of `index` (every row for one symbol)."""
    values: tuple[BarValues, ...]
    prices: dict[str, np.ndarray] = field(repr=False)

    @classmethod
    def of(cls, barset: BarSet) -> Market:
        if len(barset.symbols) == 1:  # one series is its own union (a groupby costs ~15 ms)
            groups = [(barset.symbols[0], barset.bars)]
        else:
            groups = [
                (str(symbol), group.reset_index(drop=True))
                for symbol, group in barset.bars.groupby("symbol", sort=False, observed=True)
            ]
        stamps = [pd.DatetimeIndex(g["ts"]) for _, g in groups]
        index = stamps[0]
        for more in stamps[1:]:
            index = index.union(more)
        index = index.rename("ts")
        rows: tuple[np.ndarray | slice, ...] = (
            (slice(None),) if len(groups) == 1 else tuple(index.get_indexer(s) for s in stamps)
        )
        if len(groups) == 1:  # one column: the bar frame's own arrays, not copies
            bars = groups[0][1]
            prices = {n: bars[n].to_numpy(dtype=np.float64).reshape(-1, 1) for n in PRICES}
        else:
            prices = _aligned_prices([g for _, g in groups], rows, len(index))
        return cls(
            barset=barset,
            index=index,
            symbols=tuple(s for s, _ in groups),
            rows=rows,
            values=tuple(BarValues(g) for _, g in groups),
            prices=prices,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.index), len(self.symbols)

    def signals(
        self, strategy: Strategy[Any], out: dict[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """The strategy's `SIGNAL_MASKS` per bar and symbol (rows x symbols), by its batch form;
        written into `out` when given (rows x symbols each, False where a symbol has no bar): a
        sweep's columns for one combination, filled without a copy."""
        one = len(self.symbols) == 1
        if out is None and not one:
            out = {name: np.zeros(self.shape, dtype=np.bool_) for name in SIGNAL_MASKS}
        for j, (at, values) in enumerate(zip(self.rows, self.values, strict=True)):
            try:
                if one:  # the rule's own fresh arrays as one column, or written into `out`
                    column = None if out is None else {n: out[n][:, 0] for n in SIGNAL_MASKS}
                    masks = rule_masks(strategy, values, out=column)
                    return out or {name: masks[name].reshape(-1, 1) for name in SIGNAL_MASKS}
                masks = rule_masks(strategy, values)
            except ValidationError as e:
                raise ValidationError(f"{self.symbols[j]}: {e}") from None
            assert out is not None
            for name in SIGNAL_MASKS:
                out[name][at, j] = masks[name]
        assert out is not None
        return out


def _aligned_prices(
    groups: list[pd.DataFrame], rows: tuple[np.ndarray | slice, ...], length: int
) -> dict[str, np.ndarray]:
    """`PRICES` of several symbols on the union of their times (rows x symbols): the close
    carried forward over a symbol's missing bars, open/high/low the close there."""
    prices: dict[str, np.ndarray] = {}
    for name in PRICES:
        data = np.full((length, len(groups)), np.nan)
        for j, (at, group) in enumerate(zip(rows, groups, strict=True)):
            data[at, j] = group[name].to_numpy(dtype=np.float64)
        prices[name] = data
    prices["close"] = pd.DataFrame(prices["close"]).ffill().to_numpy()
    for name in ("open", "high", "low"):
        gap = np.isnan(prices[name])
        prices[name][gap] = prices["close"][gap]
    return prices
