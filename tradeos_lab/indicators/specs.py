"""Indicator specs: one small frozen, validated dataclass per indicator, and sets of them.

A spec knows its canonical `name`, its output columns (`outputs`), its warm-up (`warmup`, the
bars before its first defined value), its batch form (`batch(bars)`: a frame with `outputs` as
columns, aligned with the bar frame) and its incremental form (`state()`). Strategies declare an
`IndicatorSet` and evaluate their rule over its batch columns in a backtest and over the latest
rows of its `IndicatorSetState` live, so both come from the same specs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from tradeos_lab.errors import ValidationError
from tradeos_lab.indicators import kernels, states
from tradeos_lab.indicators.sessions import check_calendar
from tradeos_lab.indicators.states import IndicatorState, bar_tuple

_REGIME_LABELS = {-1.0: "low", 0.0: "normal", 1.0: "high"}


def _slug(calendar: str) -> str:
    """A calendar name as it appears in output names ('24/7' -> '24_7', 'XNYS' -> 'xnys')."""
    return re.sub(r"[^a-z0-9]+", "_", calendar.lower()).strip("_")


@dataclass(frozen=True)
class BarArrays:
    """The checked columns of one symbol's bar frame, computed once for every spec of a set.
    `ts` holds epoch integers in the frame's own resolution, `ts_unit` nanoseconds each (no
    pass to convert them; the session kernels take them so)."""

    ts: np.ndarray | None
    open: np.ndarray | None
    high: np.ndarray | None
    low: np.ndarray | None
    close: np.ndarray | None
    volume: np.ndarray | None
    ts_unit: int = 1

    @classmethod
    def of(cls, bars: pd.DataFrame, needs: tuple[str, ...]) -> BarArrays:
        """Check the columns in `needs` (ts strictly increasing, prices finite, volume not
        infinite) or raise `ValidationError` naming the problem."""
        if not isinstance(bars, pd.DataFrame):
            raise ValidationError(f"bars must be a DataFrame, got {type(bars).__name__}")
        wanted = set(needs) | {"ts"}
        missing = sorted(name for name in wanted if name not in bars.columns)  # hashed lookups
        if missing:
            raise ValidationError(f"bars are missing columns {missing}")
        got: dict[str, np.ndarray | None] = dict.fromkeys(("open", "high", "low", "close"))
        # prices are checked for NaN and infinities by the kernels that read them
        for name in got:
            if name in wanted:
                got[name] = kernels.as_floats(bars[name].to_numpy(), name)
        volume = bars["volume"].to_numpy() if "volume" in wanted else None
        # the passes over whole columns last: each evicts the Python objects the steps above
        # use, which then cost several times as much
        ts, unit = kernels.epoch_times(bars["ts"])
        volume = None if volume is None else kernels.as_volumes(volume)
        return cls(ts=ts, volume=volume, ts_unit=unit, **got)

    def __getitem__(self, name: str) -> np.ndarray:
        value = getattr(self, name)
        assert value is not None, f"{name} was not checked"
        return value  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Indicator:
    """Base of every spec: subclasses set `kind`, `inputs` and implement the parts below."""

    kind: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ("close",)

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.name,)

    @property
    def warmup(self) -> int:
        raise NotImplementedError

    def batch(self, bars: pd.DataFrame) -> pd.DataFrame:
        """One symbol's bar frame -> a float frame with columns `outputs`, same index."""
        columns = self.compute(BarArrays.of(bars, self.inputs))
        if len(columns) == 1:  # a 2-D view: pandas builds it at a quarter of a dict's cost
            return pd.DataFrame(
                columns[0].reshape(-1, 1), index=bars.index, columns=self._columns, copy=False
            )
        return pd.DataFrame(
            dict(zip(self.outputs, columns, strict=True)), index=bars.index, copy=False
        )

    @cached_property
    def _columns(self) -> pd.Index:
        """`outputs` as the frame's column index, built once per spec."""
        return pd.Index(self.outputs)

    def compute(self, bars: BarArrays) -> tuple[np.ndarray, ...]:
        """The output arrays over already-checked bar columns."""
        raise NotImplementedError

    def state(self) -> IndicatorState:
        """A fresh incremental state of this spec."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class RSI(Indicator):
    """Relative strength index, Wilder's smoothing."""

    kind: ClassVar[str] = "rsi"
    period: int = 14

    def __post_init__(self) -> None:
        kernels.check_period(self.period, "period")

    @property
    def name(self) -> str:
        return f"rsi_{self.period}"

    @property
    def warmup(self) -> int:
        return self.period

    def compute(self, bars: BarArrays) -> tuple[np.ndarray, ...]:
        return (kernels.rsi(bars["close"], self.period),)

    def state(self) -> IndicatorState:
        return states.RSIState(self, self.period)


@dataclass(frozen=True)
class SMA(Indicator):
    """Simple moving average of the close."""

    kind: ClassVar[str] = "sma"
    period: int

    def __post_init__(self) -> None:
        kernels.check_period(self.period, "period")

    @property
    def name(self) -> str:
        return f"sma_{self.period}"

    @property
    def warmup(self) -> int:
        return self.period - 1

    def compute(self, bars: BarArrays) -> tuple[np.ndarray, ...]:
        return (kernels.sma(bars["close"], self.period),)

    def state(self) -> IndicatorState:
        return states.SMAState(self, self.period)


@dataclass(frozen=True)
class EMA(Indicator):
    """Exponential moving average of the close, seeded with the SMA of its first `period`."""

    kind: ClassVar[str] = "ema"
    period: int

    def __post_init__(self) -> None:
        kernels.check_period(self.period, "period")

    @property
    def name(self) -> str:
        return f"ema_{self.period}"

    @property
    def warmup(self) -> int:
        return self.period - 1

    def compute(self, bars: BarArrays) -> tuple[np.ndarray, ...]:
        return (kernels.ema(bars["close"], self.period),)

    def state(self) -> IndicatorState:
        return states.EMAState(self, self.period)


@dataclass(frozen=True)
class MACD(Indicator):
    """MACD line (fast EMA - slow EMA), its signal EMA and the histogram (line - signal)."""

    kind: ClassVar[str] = "macd"
    fast: int = 12
    slow: int = 26
    signal: int = 9

    def __post_init__(self) -> None:
        kernels.check_macd(self.fast, self.slow, self.signal)

    @property
    def name(self) -> str:
        return f"macd_{self.fast}_{self.slow}_{self.signal}"

    @property
    def outputs(self) -> tuple[str, ...]:
        tag = f"{self.fast}_{self.slow}_{self.signal}"
        return (f"macd_{tag}", f"macd_signal_{tag}", f"macd_hist_{tag}")

    @property
    def warmup(self) -> int:
        return self.slow + self.signal - 2

    def compute(self, bars: BarArrays) -> tuple[np.ndarray, ...]:
        return kernels.macd(bars["close"], self.fast, self.slow, self.signal)

    def state(self) -> IndicatorState:
        return states.MACDState(self, self.fast, self.slow, self.signal)


@dataclass(frozen=True)
class BBands(Indicator):
    """Bollinger Bands: SMA(period) +- k population standard deviations."""

    kind: ClassVar[str] = "bbands"
    period: int = 20
    k: float = 2.0

    def __post_init__(self) -> None:
        kernels.check_period(self.period, "period")
        object.__setattr__(self, "k", kernels.check_positive(self.k, "k"))

    @property
    def name(self) -> str:
        return f"bb_{self.period}_{self.k:g}"

    @property
    def outputs(self) -> tuple[str, ...]:
        tag = f"{self.period}_{self.k:g}"
        return (f"bb_upper_{tag}", f"bb_middle_{tag}", f"bb_lower_{tag}")

    @property
    def warmup(self) -> int:
        return self.period - 1

    def compute(self, bars: BarArrays) -> tuple[np.ndarray, ...]:
        return kernels.bbands(bars["close"], self.period, self.k)

    def state(self) -> IndicatorState:
        return states.BBandsState(self, self.period, self.k)


@dataclass(frozen=True)
class ATR(Indicator):
    """Average true range, Wilder's smoothing."""

    kind: ClassVar[str] = "atr"
    inputs: ClassVar[tuple[str, ...]] = ("high", "low", "close")
    period: int = 14

    def __post_init__(self) -> None:
        kernels.check_period(self.period, "period")

    @property
    def name(self) -> str:
        return f"atr_{self.period}"

    @property
    def warmup(self) -> int:
        return self.period

    def compute(self, bars: BarArrays) -> tuple[np.ndarray, ...]:
        return (kernels.atr(bars["high"], bars["low"], bars["close"], self.period),)

    def state(self) -> IndicatorState:
        return states.ATRState(self, self.period)


@dataclass(frozen=True)
class ATRRegime(Indicator):
    """Volatility regime against the symbol's own ATR history: the ATR's mid-rank percentile
    among its last `lookback` values; -1 low (<= `low`), +1 high (>= `high`), 0 normal."""

    kind: ClassVar[str] = "atr_regime"
    inputs: ClassVar[tuple[str, ...]] = ("high", "low", "close")
    period: int = 14
    lookback: int = 100
    low: float = 0.25
    high: float = 0.75

    def __post_init__(self) -> None:
        kernels.check_regime(self.period, self.lookback, self.low, self.high)
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))

    @property
    def name(self) -> str:
        base = f"atr_regime_{self.period}_{self.lookback}"
        if (self.low, self.high) != (0.25, 0.75):
            base += f"_{self.low:g}_{self.high:g}"
        return base

    @property
    def warmup(self) -> int:
        return self.period + self.lookback - 1

    @staticmethod
    def label(code: float) -> str | None:
        """'low', 'normal' or 'high' for a regime code; None before warm-up (NaN)."""
        return _REGIME_LABELS.get(float(code))

    def compute(self, bars: BarArrays) -> tuple[np.ndarray, ...]:
        return (
            kernels.atr_regime(
                bars["high"],
                bars["low"],
                bars["close"],
                self.period,
                lookback=self.lookback,
                low_pct=self.low,
                high_pct=self.high,
            ),
        )

    def state(self) -> IndicatorState:
        return states.ATRRegimeState(self, self.period, self.lookback, self.low, self.high)


@dataclass(frozen=True)
class VolumePercentile(Indicator):
    """Mid-rank percentile of the bar's volume within the last `window` bars (itself
    included); 1.0 is the busiest. NaN volumes are unknown: not ranked, their own value NaN."""

    kind: ClassVar[str] = "volume_pct"
    inputs: ClassVar[tuple[str, ...]] = ("volume",)
    window: int = 100

    def __post_init__(self) -> None:
        kernels.check_period(self.window, "window", 1)

    @property
    def name(self) -> str:
        return f"volume_pct_{self.window}"

    @property
    def warmup(self) -> int:
        return self.window - 1

    def compute(self, bars: BarArrays) -> tuple[np.ndarray, ...]:
        return (kernels.rolling_percentile(bars["volume"], self.window),)

    def state(self) -> IndicatorState:
        return states.VolumePercentileState(self, self.window)


@dataclass(frozen=True)
class SessionVWAP(Indicator):
    """VWAP of the typical price since the calendar session opened ("24/7": each UTC day)."""

    kind: ClassVar[str] = "session_vwap"
    inputs: ClassVar[tuple[str, ...]] = ("ts", "high", "low", "close", "volume")
    calendar: str = "24/7"

    def __post_init__(self) -> None:
        check_calendar(self.calendar)

    @property
    def name(self) -> str:
        return f"vwap_{_slug(self.calendar)}"

    @property
    def warmup(self) -> int:
        """0: defined from a session's first bar with volume; NaN outside sessions."""
        return 0

    def compute(self, bars: BarArrays) -> tuple[np.ndarray, ...]:
        return (
            kernels.session_vwap_epoch(
                bars["ts"],
                bars.ts_unit,
                bars["high"],
                bars["low"],
                bars["close"],
                bars["volume"],
                calendar=self.calendar,
            ),
        )

    def state(self) -> IndicatorState:
        return states.SessionVWAPState(self, self.calendar)


@dataclass(frozen=True)
class OpeningRange(Indicator):
    """Opening range of the first `minutes` of each calendar session and a breakout code per
    later bar: +1 close above the range, -1 below, 0 inside (NaN while the range forms)."""

    kind: ClassVar[str] = "opening_range"
    inputs: ClassVar[tuple[str, ...]] = ("ts", "high", "low", "close")
    minutes: int = 30
    calendar: str = "24/7"

    def __post_init__(self) -> None:
        kernels.check_period(self.minutes, "minutes", 1)
        check_calendar(self.calendar)

    @property
    def name(self) -> str:
        return f"or_{self.minutes}_{_slug(self.calendar)}"

    @property
    def outputs(self) -> tuple[str, ...]:
        tag = f"{self.minutes}_{_slug(self.calendar)}"
        return (f"or_high_{tag}", f"or_low_{tag}", f"or_breakout_{tag}")

    @property
    def warmup(self) -> int:
        """0: defined from the first bar after each session's opening range."""
        return 0

    def compute(self, bars: BarArrays) -> tuple[np.ndarray, ...]:
        return kernels.opening_range_epoch(
            bars["ts"],
            bars.ts_unit,
            bars["high"],
            bars["low"],
            bars["close"],
            minutes=self.minutes,
            calendar=self.calendar,
        )

    def state(self) -> IndicatorState:
        return states.OpeningRangeState(self, self.minutes, self.calendar)


_KINDS: dict[str, type[Indicator]] = {
    cls.kind: cls
    for cls in (RSI, SMA, EMA, MACD, BBands, ATR, ATRRegime, VolumePercentile, SessionVWAP)
}
_KINDS[OpeningRange.kind] = OpeningRange


def indicator_from_dict(data: Mapping[str, Any]) -> Indicator:
    """The spec saved by `Indicator.to_dict`, validated again."""
    if not isinstance(data, Mapping) or data.get("kind") not in _KINDS:
        raise ValidationError(f"unknown indicator spec {data!r}")
    cls = _KINDS[data["kind"]]
    names = {f.name for f in fields(cls)}
    params = {k: v for k, v in data.items() if k != "kind"}
    if set(params) - names:
        raise ValidationError(f"unknown parameters {sorted(set(params) - names)} for {cls.kind}")
    return cls(**params)


# ---- sets ------------------------------------------------------------------------------------


@dataclass(frozen=True, init=False)
class IndicatorSet:
    """Several specs computed together: their outputs side by side, in declaration order."""

    specs: tuple[Indicator, ...]

    def __init__(self, specs: Iterable[Indicator]) -> None:
        items = tuple(specs)
        for spec in items:
            if not isinstance(spec, Indicator):
                raise ValidationError(f"not an indicator spec: {spec!r}")
        names = [name for spec in items for name in spec.outputs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValidationError(f"indicator outputs declared twice: {duplicates}")
        object.__setattr__(self, "specs", items)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(name for spec in self.specs for name in spec.outputs)

    @property
    def warmup(self) -> int:
        return max((spec.warmup for spec in self.specs), default=0)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(sorted({name for spec in self.specs for name in spec.inputs}))

    def batch(self, bars: pd.DataFrame) -> pd.DataFrame:
        """One symbol's bar frame -> every output as a column, same index."""
        arrays = BarArrays.of(bars, self.inputs)
        columns: dict[str, np.ndarray] = {}
        for spec in self.specs:
            columns.update(zip(spec.outputs, spec.compute(arrays), strict=True))
        return pd.DataFrame(columns, index=bars.index, columns=list(self.outputs), copy=False)

    def state(self) -> IndicatorSetState:
        return IndicatorSetState([spec.state() for spec in self.specs])

    def to_dict(self) -> dict[str, Any]:
        return {"specs": [spec.to_dict() for spec in self.specs]}


class IndicatorSetState:
    """The incremental states of a set: one bar in, every output's latest value out."""

    __slots__ = ("outputs", "states")

    def __init__(self, states_: Iterable[IndicatorState]) -> None:
        self.states = list(states_)
        self.outputs = tuple(name for state in self.states for name in state.outputs)

    @property
    def indicators(self) -> IndicatorSet:
        return IndicatorSet(state.spec for state in self.states)

    @property
    def last_ts(self) -> int | None:
        """Epoch ns of the last bar taken (None before the first)."""
        return self.states[0].last_ts if self.states else None

    def update(self, bar: Mapping[str, Any] | Any) -> dict[str, float]:
        checked = bar_tuple(bar)
        values: list[float] = []
        for state in self.states:
            values.extend(state.step(checked))
        return dict(zip(self.outputs, values, strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {"states": [state.to_dict() for state in self.states]}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> IndicatorSetState:
        if not isinstance(data, Mapping) or not isinstance(data.get("states"), list):
            raise ValidationError("malformed saved indicator set state")
        return IndicatorSetState(IndicatorState.from_dict(d) for d in data["states"])


# ---- many symbols ----------------------------------------------------------------------------


def compute(
    bars: pd.DataFrame, specs: IndicatorSet | Iterable[Indicator]
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """Indicators over many symbols at once.

    - A long bar frame (a `symbol` column; rows grouped per symbol, each symbol in time order)
      gives a long frame: `symbol`, `ts` and every output, aligned with the input's index.
    - A wide frame of closes (one column per symbol, rows in time order) gives one wide frame
      per output, same shape; only close-based specs (RSI, SMA, EMA, MACD, BBands) apply.
    """
    indicator_set = specs if isinstance(specs, IndicatorSet) else IndicatorSet(specs)
    if not isinstance(bars, pd.DataFrame):
        raise ValidationError(f"bars must be a DataFrame, got {type(bars).__name__}")
    if "symbol" in bars.columns:
        parts = []
        for symbol, group in bars.groupby("symbol", sort=False, observed=True):
            try:
                parts.append(indicator_set.batch(group))
            except ValidationError as e:
                raise ValidationError(f"{symbol}: {e}") from None
        values = pd.concat(parts).reindex(bars.index) if parts else indicator_set.batch(bars)
        return pd.concat([bars[["symbol", "ts"]], values], axis=1)
    return _compute_wide(bars, indicator_set)


def _compute_wide(closes: pd.DataFrame, indicator_set: IndicatorSet) -> dict[str, pd.DataFrame]:
    not_close = [s.name for s in indicator_set.specs if s.inputs != ("close",)]
    if not_close:
        raise ValidationError(
            f"a wide frame holds closes only; {not_close} need a long bar frame "
            "with a symbol column"
        )
    if isinstance(closes.index, pd.DatetimeIndex):
        kernels.check_times(closes.index)
    out = {name: pd.DataFrame(index=closes.index) for name in indicator_set.outputs}
    for symbol in closes.columns:
        column = kernels.as_prices(closes[symbol].to_numpy(), f"{symbol} close")
        arrays = BarArrays(None, None, None, None, column, None)
        for spec in indicator_set.specs:
            try:
                results = spec.compute(arrays)
            except ValidationError as e:
                raise ValidationError(f"{symbol}: {e}") from None
            for name, values in zip(spec.outputs, results, strict=True):
                out[name][symbol] = values
    return out
