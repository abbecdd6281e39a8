"""The batch form: a strategy's rule over whole bar histories, shaped for vectorbt.

`symbol_signals` evaluates one symbol; `batch_signals` puts many symbols side by side as wide
frames (ts x symbol); `sweep` does that for every combination of a parameter grid, with the
parameters as the outer levels of a column MultiIndex. The frames go straight into
`vectorbt.Portfolio.from_signals(close, entries, exits, short_entries=..., short_exits=...)`.

From a strength per bar (see `tradeos_lab.strategies.base`): entries where it is > 0, short
entries where < 0; a long is exited by any signal that is not long (flat or short) and a short by
any that is not short, so the same arrays also drive a long-only portfolio.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numba
import numpy as np
import pandas as pd

from tradeos_lab.errors import ValidationError
from tradeos_lab.indicators import Indicator
from tradeos_lab.indicators.specs import BarArrays
from tradeos_lab.strategies.base import BAR_FIELDS, FloatArray, Strategy, ValueColumns

SIGNAL_COLUMNS = (
    "strength",
    "confidence",
    "direction",
    "entries",
    "exits",
    "short_entries",
    "short_exits",
)


def symbol_signals(strategy: Strategy[Any], bars: pd.DataFrame) -> pd.DataFrame:
    """One symbol's bars -> ts, close, the indicator outputs and `SIGNAL_COLUMNS` per bar."""
    if "symbol" in bars.columns and bars["symbol"].nunique() > 1:
        raise ValidationError(
            f"signals() takes one symbol's bars, got {bars['symbol'].nunique()} symbols; "
            "use batch() for many"
        )
    missing = [c for c in ("ts", *BAR_FIELDS, *strategy.extra_inputs) if c not in bars.columns]
    if missing:
        raise ValidationError(f"bars are missing columns {missing}")
    values, arrays = rule_arrays(strategy, BarValues(bars))
    columns: dict[str, Any] = {
        "ts": pd.to_datetime(bars["ts"], utc=True).reset_index(drop=True),
        "close": values["close"],
        **{c: values[c] for c in strategy.indicator_set.outputs},
        **arrays,
    }
    return pd.DataFrame(columns)


class BarValues:
    """One symbol's bars as the float arrays a rule reads, with every indicator output computed
    once per spec: a sweep evaluates many parameter sets over the same bars, and two sets that
    share an indicator (the same SMA(20)) compute it once."""

    def __init__(self, bars: pd.DataFrame) -> None:
        self.bars = bars
        self.length = len(bars)
        self.fields = {c: bars[c].to_numpy(dtype=np.float64, copy=False) for c in BAR_FIELDS}
        self._checked: dict[tuple[str, ...], BarArrays] = {}
        self._outputs: dict[Indicator, tuple[np.ndarray, ...]] = {}

    def column(self, name: str) -> np.ndarray:
        """A column beside the bars that a strategy reads as an extra input (news sentiment)."""
        if name not in self.fields:
            if name not in self.bars.columns:
                raise ValidationError(f"bars are missing the column {name!r} the strategy reads")
            self.fields[name] = self.bars[name].to_numpy(dtype=np.float64, copy=False)
        return self.fields[name]

    def indicator(self, spec: Indicator) -> tuple[np.ndarray, ...]:
        """The outputs of `spec` over these bars (computed on first request)."""
        if spec not in self._outputs:
            inputs = spec.inputs
            if inputs not in self._checked:
                self._checked[inputs] = BarArrays.of(self.bars, inputs)
            self._outputs[spec] = spec.compute(self._checked[inputs])
        return self._outputs[spec]


def rule_values(strategy: Strategy[Any], bars: BarValues) -> ValueColumns:
    """The values the rule reads: the bar fields, extra inputs and indicator outputs."""
    values = ValueColumns((c, bars.fields[c]) for c in BAR_FIELDS)
    for name in strategy.extra_inputs:
        values[name] = bars.column(name)
    for spec in strategy.indicator_set.specs:
        outputs = bars.indicator(spec)
        for name, column in zip(spec.outputs, outputs, strict=True):
            values[name] = np.asarray(column, dtype=np.float64)
    return values


def rule_arrays(
    strategy: Strategy[Any], bars: BarValues
) -> tuple[ValueColumns, dict[str, np.ndarray]]:
    """The values the rule read and `SIGNAL_COLUMNS` per bar: the one evaluation of a rule
    over whole arrays, shared by `symbol_signals` and the research backtests."""
    values = rule_values(strategy, bars)
    strength, confidence = strategy.decide(values, bars.length)
    return values, vectorbt_arrays(strength, confidence)


def rule_masks(
    strategy: Strategy[Any], bars: BarValues, out: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Only the four vectorbt masks of `SIGNAL_COLUMNS` per bar, by the same rule evaluation
    as `rule_arrays`: a sweep reads nothing else, and the other columns cost as much again.
    Written into `out` when given (see `signal_masks`)."""
    strength, _ = strategy.strength(rule_values(strategy, bars), bars.length)
    return signal_masks(strength, out)


def signal_masks(
    strength: FloatArray, out: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """entries, exits, short_entries, short_exits from strength per bar (NaN compares False:
    no signal, no mask); into the boolean arrays of `out` when given (a sweep's columns)."""
    if out is None:
        out = {name: np.empty(strength.shape, dtype=np.bool_) for name in SIGNAL_MASKS}
    _signal_masks_nb(strength, *(out[name] for name in SIGNAL_MASKS))
    return out


SIGNAL_MASKS = ("entries", "exits", "short_entries", "short_exits")
"""The four boolean frames `vectorbt.Portfolio.from_signals` takes, in the order
`_signal_masks_nb` writes them."""


@numba.njit(cache=True)
def _signal_masks_nb(
    strength: np.ndarray,
    entries: np.ndarray,
    exits: np.ndarray,
    short_entries: np.ndarray,
    short_exits: np.ndarray,
) -> None:
    """Each mask as a comparison of the strength with 0, all four in one pass over it (a
    sweep writes them per parameter set over the whole history)."""
    for i in range(strength.shape[0]):
        s = strength[i]
        entries[i] = s > 0.0
        exits[i] = s <= 0.0
        short_entries[i] = s < 0.0
        short_exits[i] = s >= 0.0


def vectorbt_arrays(strength: FloatArray, confidence: FloatArray) -> dict[str, np.ndarray]:
    """`SIGNAL_COLUMNS` from strength and confidence per bar (see the module docstring)."""
    signal = ~np.isnan(strength)
    return {
        "strength": strength,
        "confidence": confidence,
        "direction": np.sign(np.where(signal, strength, 0.0)).astype(np.int8),
        **signal_masks(strength),
    }


@dataclass(frozen=True)
class SignalFrames:
    """Wide frames (index ts, one column per symbol, or per parameters and symbol in a sweep)
    with equal index and columns: what `vectorbt.Portfolio.from_signals` takes.

    `close` is carried forward over a symbol's missing bars (valued at its last close); the
    signal frames have no signal there.
    """

    close: pd.DataFrame
    strength: pd.DataFrame
    confidence: pd.DataFrame
    direction: pd.DataFrame
    entries: pd.DataFrame
    exits: pd.DataFrame
    short_entries: pd.DataFrame
    short_exits: pd.DataFrame

    def portfolio_arguments(self) -> dict[str, pd.DataFrame]:
        """`close`, `entries`, `exits`, `short_entries`, `short_exits` for `from_signals(**...)`."""
        return {
            "close": self.close,
            "entries": self.entries,
            "exits": self.exits,
            "short_entries": self.short_entries,
            "short_exits": self.short_exits,
        }


_DTYPES: dict[str, Any] = {
    "close": np.float64,
    "strength": np.float64,
    "confidence": np.float64,
    "direction": np.int8,
    "entries": np.bool_,
    "exits": np.bool_,
    "short_entries": np.bool_,
    "short_exits": np.bool_,
}
"""Each wide frame's dtype; where a symbol has no bar, floats are NaN, direction 0, masks False."""


def batch_signals(strategy: Strategy[Any], bars: pd.DataFrame) -> SignalFrames:
    """Bars of one or many symbols (long frame with a `symbol` column) -> `SignalFrames`."""
    if "symbol" not in bars.columns:
        raise ValidationError("bars need a symbol column for batch(); use signals() without one")
    if "timeframe" in bars.columns and bars["timeframe"].nunique() > 1:
        raise ValidationError("bars mix timeframes; evaluate one timeframe at a time")
    per_symbol = {
        str(symbol): symbol_signals(strategy, group)
        for symbol, group in bars.groupby("symbol", sort=True, observed=True)
    }
    if not per_symbol:
        raise ValidationError("no bars to evaluate")
    return _wide(per_symbol)


def _wide(per_symbol: dict[str, pd.DataFrame]) -> SignalFrames:
    """Per-symbol signal frames -> one wide frame per field on the union of their times."""
    stamps = [pd.DatetimeIndex(f["ts"]) for f in per_symbol.values()]
    index = stamps[0]
    for more in stamps[1:]:
        index = index.union(more)
    index.name = "ts"
    rows = [index.get_indexer(s) for s in stamps]
    columns = pd.Index(list(per_symbol), name="symbol")
    frames: dict[str, pd.DataFrame] = {}
    for field in fields(SignalFrames):
        dtype = _DTYPES[field.name]
        data = np.zeros((len(index), len(columns)), dtype=dtype)
        if dtype is np.float64:
            data.fill(np.nan)
        for j, (at, f) in enumerate(zip(rows, per_symbol.values(), strict=True)):
            data[at, j] = f[field.name].to_numpy()
        frame = pd.DataFrame(data, index=index, columns=columns)
        frames[field.name] = frame.ffill() if field.name == "close" else frame
    return SignalFrames(**frames)


def sweep(
    strategy_type: type[Strategy[Any]], bars: pd.DataFrame, **grid: Sequence[Any] | Any
) -> SignalFrames:
    """Every combination of the parameter `grid` (`fast=[5, 10], slow=[20, 50]`) over the bars
    of one or many symbols; columns are a MultiIndex (parameter levels..., symbol).

    Combinations the parameters reject (e.g. fast >= slow) are left out; a grid with none left
    is an error.
    """
    names = list(grid)
    choices = [_as_list(grid[n]) for n in names]
    parts: list[tuple[tuple[Any, ...], SignalFrames]] = []
    rejected: list[str] = []
    for combo in itertools.product(*choices):
        try:
            strategy = strategy_type(dict(zip(names, combo, strict=True)))
        except ValidationError as e:
            rejected.append(str(e))
            continue
        parts.append((combo, batch_signals(strategy, bars)))
    if not parts:
        raise ValidationError(f"no combination of the grid is valid: {'; '.join(rejected[:3])}")
    frames: dict[str, pd.DataFrame] = {}
    for field in fields(SignalFrames):
        pieces = [getattr(frames_, field.name) for _, frames_ in parts]
        keys = [combo for combo, _ in parts]
        joined = pd.concat(pieces, axis=1, keys=keys, names=[*names, "symbol"])
        frames[field.name] = joined
    return SignalFrames(**frames)


def _as_list(value: Sequence[Any] | Any) -> list[Any]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        return [value]
    return list(value)
