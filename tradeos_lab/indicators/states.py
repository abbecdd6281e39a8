"""Incremental indicator states: one small object per (symbol, timeframe, indicator).

`state.update(bar)` takes one new bar in O(1) and returns the indicator's latest values; feeding
bars one at a time gives the batch values (`spec.batch`). Where the batch form is a kernel of
ours (SMA, EMA, ATR, the percentiles, session VWAP, opening range), the state repeats its
operations in its order, so the values are the same floats: the SMA's running sum with its
re-summations at the same bars, the EMA's and ATR's four-bars-per-step recurrence
(`Smoothing`). Where it calls TA-Lib (RSI, MACD, Bollinger Bands), the state repeats TA-Lib's
seeding (EMA from the SMA of the first `period` values, RSI from the mean of its first
`period` changes, then Wilder's smoothing) and its order of operations; what is left is about
one unit in the last place (TA-Lib's compiled code may fuse a multiply and an add), far
inside the 1e-9 relative agreement the property test holds.

Rolling percentiles keep the window sorted (`bisect.insort` and a removal by binary search):
each is a memmove of at most `window` floats, O(window) with a tiny constant, which is O(1)
per bar for a fixed window. Bollinger Bands' deviation is the one O(period) sum, on purpose
(see `BBandsState`). Hot paths use plain floats and lists, never numpy scalars.

`to_dict()` is JSON-safe (NaN and infinities become None / "inf" / "-inf") and
`IndicatorState.from_dict` rebuilds the state, so a restarted Signal Engine resumes where it was
without replaying history. A NaN volume is an unknown volume, treated as in the batch kernels.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from tradeos_lab.errors import ValidationError
from tradeos_lab.indicators.kernels import sma_block
from tradeos_lab.indicators.sessions import sessions

if TYPE_CHECKING:
    from tradeos_lab.indicators.specs import Indicator

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
NAN = math.nan

BarTuple = tuple[int, float, float, float, float, float]


# ---- reading one bar ------------------------------------------------------------------------


def bar_tuple(bar: Mapping[str, Any] | Any) -> BarTuple:
    """(ts in epoch ns, open, high, low, close, volume) of a mapping or a `Bar` contract.

    Prices must be finite; volume may be NaN (unknown) or missing (NaN) but not infinite.
    """
    fields = bar if isinstance(bar, Mapping) else bar.__dict__
    try:
        ts = _epoch_ns(fields["ts"])
        o, h, lo, c = (
            float(fields["open"]),
            float(fields["high"]),
            float(fields["low"]),
            float(fields["close"]),
        )
        raw_volume = fields.get("volume")
        v = NAN if raw_volume is None else float(raw_volume)
    except KeyError as e:
        raise ValidationError(f"bar is missing {e}") from None
    except (TypeError, ValueError, AttributeError):
        raise ValidationError(f"bar {bar!r} has a non-numeric price") from None
    if not (math.isfinite(o) and math.isfinite(h) and math.isfinite(lo) and math.isfinite(c)):
        raise ValidationError(f"bar at {pd.Timestamp(ts, tz='UTC')} has a NaN or infinite price")
    if math.isinf(v) or v < 0:
        raise ValidationError(f"bar at {pd.Timestamp(ts, tz='UTC')} has a bad volume {v}")
    return ts, o, h, lo, c, v


def _epoch_ns(ts: object) -> int:
    if isinstance(ts, pd.Timestamp):
        return int(ts.tz_localize("UTC").value if ts.tzinfo is None else ts.value)
    if isinstance(ts, datetime):
        aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
        return ((aware - _EPOCH) // _ONE_US) * 1000
    if isinstance(ts, np.datetime64):
        return int(ts.astype("datetime64[ns]").astype(np.int64))
    raise ValidationError(f"bar ts must be a datetime, got {type(ts).__name__}")


# ---- JSON-safe floats -----------------------------------------------------------------------


def _dump(value: float) -> float | str | None:
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _load(value: object) -> float:
    if value is None:
        return NAN
    if isinstance(value, str):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"bad number {value!r} in a saved indicator state")
    return float(value)


def _dumps(values: Iterable[float]) -> list[float | str | None]:
    return [_dump(v) for v in values]


def _loads(values: object) -> list[float]:
    if not isinstance(values, list):
        raise ValidationError(f"bad list {values!r} in a saved indicator state")
    return [_load(v) for v in values]


# ---- the base -------------------------------------------------------------------------------


class IndicatorState:
    """The incremental form of one indicator spec; subclasses implement `_advance`."""

    kind: ClassVar[str]
    __slots__ = ("last_ts", "outputs", "spec")

    def __init__(self, spec: Indicator) -> None:
        self.spec = spec
        self.outputs: tuple[str, ...] = spec.outputs
        self.last_ts: int | None = None

    def update(self, bar: Mapping[str, Any] | Any) -> dict[str, float]:
        """Take one new bar (later than every bar before) and return the latest values."""
        return dict(zip(self.outputs, self.step(bar_tuple(bar)), strict=True))

    def step(self, bar: BarTuple) -> tuple[float, ...]:
        """`update` on an already-read bar (`bar_tuple`); the values in `outputs` order."""
        ts = bar[0]
        last = self.last_ts
        if last is not None and ts <= last:
            what = "duplicate" if ts == last else "unsorted"
            raise ValidationError(
                f"{self.spec.name}: {what} bar at {pd.Timestamp(ts, tz='UTC')} "
                f"(the last bar was at {pd.Timestamp(last, tz='UTC')})"
            )
        self.last_ts = ts
        return self._advance(bar)

    def _advance(self, bar: BarTuple) -> tuple[float, ...]:
        raise NotImplementedError

    def _fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def _restore(self, fields: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe snapshot: the spec, the last bar time and the running values."""
        return {"spec": self.spec.to_dict(), "last_ts": self.last_ts, "state": self._fields()}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> IndicatorState:
        """Rebuild a state saved by `to_dict`, or `ValidationError` if it is malformed."""
        from tradeos_lab.indicators.specs import indicator_from_dict

        try:
            state = indicator_from_dict(data["spec"]).state()
            last = data["last_ts"]
            if last is not None and (isinstance(last, bool) or not isinstance(last, int)):
                raise ValidationError(f"bad last_ts {last!r} in a saved indicator state")
            state.last_ts = last
            state._restore(data["state"])
        except (KeyError, TypeError, IndexError) as e:
            raise ValidationError(f"malformed saved indicator state: {e!r}") from None
        return state


# ---- moving averages -------------------------------------------------------------------------


class SMAState(IndicatorState):
    """The batch kernel's running sum over a ring buffer of the last `period` closes: add
    (newest - oldest), times 1/period, and an exact re-summation of the window every
    `sma_block(period)` values (at the same bars as the batch kernel, so the same floats)."""

    kind = "sma"
    __slots__ = ("block", "inverse", "period", "phase", "total", "window")

    def __init__(self, spec: Indicator, period: int) -> None:
        super().__init__(spec)
        self.period = period
        self.inverse = 1.0 / period
        self.block = int(sma_block(period))
        self.total = 0.0
        self.phase = 0  # values since the last re-summation (0: re-sum at the next full window)
        self.window: deque[float] = deque(maxlen=period)

    def _advance(self, bar: BarTuple) -> tuple[float, ...]:
        _, _, _, _, c, _ = bar
        return (self.push(c),)

    def push(self, x: float) -> float:
        window = self.window
        if len(window) < self.period - 1:
            window.append(x)
            return NAN
        if self.phase:
            self.total += x - window[0]
            window.append(x)
        else:
            window.append(x)
            total = 0.0
            for value in window:
                total += value
            self.total = total
        self.phase = (self.phase + 1) % self.block
        return self.total * self.inverse

    def _fields(self) -> dict[str, Any]:
        return {"total": _dump(self.total), "phase": self.phase, "window": _dumps(self.window)}

    def _restore(self, fields: Mapping[str, Any]) -> None:
        self.total = _load(fields["total"])
        self.phase = int(fields["phase"]) % self.block
        self.window = deque(_loads(fields["window"]), maxlen=self.period)


class Smoothing:
    """The batch kernels' recurrence v = a v + b y (`kernels._smooth`), one value at a time
    and in its four-values-per-step form: the j-th value of a step is e a^(j+1) + s_j, with e
    the value before the step and s_j = s_(j-1) a + b y. The same operations on the same
    floats as the batch, so the same values."""

    __slots__ = ("a", "a2", "a3", "a4", "b", "e", "j", "s")

    def __init__(self, a: float, b: float) -> None:
        self.a, self.b = a, b
        self.a2 = a * a
        self.a3 = self.a2 * a
        self.a4 = self.a3 * a
        self.e = NAN  # the value before the current step
        self.s = 0.0
        self.j = 0  # values of the current step taken

    def start(self, value: float) -> None:
        """Seed the recurrence with its first value."""
        self.e, self.s, self.j = value, 0.0, 0

    def push(self, y: float) -> float:
        j = self.j
        if j == 0:
            s = self.b * y
            out = self.e * self.a + s
        else:
            s = self.s * self.a + self.b * y
            if j == 1:
                out = self.e * self.a2 + s
            elif j == 2:
                out = self.e * self.a3 + s
            else:
                out = self.e * self.a4 + s
                self.e = out
        self.s = s
        self.j = (j + 1) % 4
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"e": _dump(self.e), "s": _dump(self.s), "j": self.j}

    def restore(self, fields: Mapping[str, Any]) -> None:
        self.e, self.s, self.j = _load(fields["e"]), _load(fields["s"]), int(fields["j"]) % 4


class EMAState(IndicatorState):
    """EMA with k = 2/(period+1), seeded with the SMA of the first `period` values, then the
    batch kernel's `Smoothing` with a = 1 - k, b = k."""

    kind = "ema"
    __slots__ = ("period", "seed", "seen", "smoothing", "value")

    def __init__(self, spec: Indicator, period: int) -> None:
        super().__init__(spec)
        self.period = period
        k = 2.0 / (period + 1)
        self.smoothing = Smoothing(1.0 - k, k)
        self.seen = 0
        self.seed = 0.0
        self.value = NAN

    def _advance(self, bar: BarTuple) -> tuple[float, ...]:
        _, _, _, _, c, _ = bar
        return (self.push(c),)

    def push(self, x: float) -> float:
        if self.seen >= self.period:
            self.value = self.smoothing.push(x)
            return self.value
        self.seen += 1
        self.seed += x
        if self.seen == self.period:
            self.value = self.seed / self.period
            self.smoothing.start(self.value)
        return self.value

    def _fields(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "seed": _dump(self.seed),
            "value": _dump(self.value),
            "smoothing": self.smoothing.to_dict(),
        }

    def _restore(self, fields: Mapping[str, Any]) -> None:
        self.seen = int(fields["seen"])
        self.seed = _load(fields["seed"])
        self.value = _load(fields["value"])
        self.smoothing.restore(fields["smoothing"])


class RSIState(IndicatorState):
    """Wilder's RSI: mean gain and loss of the first `period` changes, then smoothed."""

    kind = "rsi"
    __slots__ = ("gain", "loss", "period", "prev", "seen")

    def __init__(self, spec: Indicator, period: int) -> None:
        super().__init__(spec)
        self.period = period
        self.prev = NAN
        self.seen = 0  # price changes seen
        self.gain = 0.0
        self.loss = 0.0

    def _advance(self, bar: BarTuple) -> tuple[float, ...]:
        _, _, _, _, c, _ = bar
        prev, self.prev = self.prev, c
        if math.isnan(prev):
            return (NAN,)
        d = c - prev
        p = self.period
        if self.seen >= p:
            self.loss *= p - 1
            self.gain *= p - 1
            if d < 0:
                self.loss -= d
            else:
                self.gain += d
            self.loss /= p
            self.gain /= p
        else:
            self.seen += 1
            if d < 0:
                self.loss -= d
            else:
                self.gain += d
            if self.seen < p:
                return (NAN,)
            self.loss /= p
            self.gain /= p
        total = self.gain + self.loss
        # no movement at all: TA-Lib reports 0 (it has no tolerance; tiny sums still divide)
        return (100 * (self.gain / total) if total != 0.0 else 0.0,)

    def _fields(self) -> dict[str, Any]:
        return {
            "prev": _dump(self.prev),
            "seen": self.seen,
            "gain": _dump(self.gain),
            "loss": _dump(self.loss),
        }

    def _restore(self, fields: Mapping[str, Any]) -> None:
        self.prev = _load(fields["prev"])
        self.seen = int(fields["seen"])
        self.gain = _load(fields["gain"])
        self.loss = _load(fields["loss"])


class MACDState(IndicatorState):
    """TA-Lib's MACD: the fast EMA is seeded with the SMA of the `fast` closes ending where the
    slow EMA's seed ends (so both start at bar `slow - 1`); the signal EMA runs on the line."""

    kind = "macd"
    __slots__ = (
        "_recent",
        "fast",
        "kf",
        "ks",
        "seen",
        "signal",
        "slow",
        "slow_sum",
        "value_f",
        "value_s",
    )

    def __init__(self, spec: Indicator, fast: int, slow: int, signal: int) -> None:
        super().__init__(spec)
        self.fast, self.slow = fast, slow
        self.kf, self.ks = 2.0 / (fast + 1), 2.0 / (slow + 1)
        self.seen = 0
        self.slow_sum = 0.0
        self.value_f = NAN
        self.value_s = NAN
        self.signal = EMAState(spec, signal)
        self._recent: list[float] = []  # the closes of the fast seed, until it is taken

    def _advance(self, bar: BarTuple) -> tuple[float, ...]:
        _, _, _, _, c, _ = bar
        if self.seen >= self.slow:
            self.value_f = ((c - self.value_f) * self.kf) + self.value_f
            self.value_s = ((c - self.value_s) * self.ks) + self.value_s
        else:
            self.seen += 1
            self.slow_sum += c
            if self.seen > self.slow - self.fast:
                self._recent.append(c)
            if self.seen < self.slow:
                return (NAN, NAN, NAN)
            self.value_s = self.slow_sum / self.slow
            fast_sum = 0.0
            for x in self._recent:
                fast_sum += x
            self.value_f = fast_sum / self.fast
            self._recent = []
        line = self.value_f - self.value_s
        sig = self.signal.push(line)
        if math.isnan(sig):
            return (NAN, NAN, NAN)
        return (line, sig, line - sig)

    def _fields(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "slow_sum": _dump(self.slow_sum),
            "value_f": _dump(self.value_f),
            "value_s": _dump(self.value_s),
            "recent": _dumps(self._recent),
            "signal": self.signal._fields(),
        }

    def _restore(self, fields: Mapping[str, Any]) -> None:
        self.seen = int(fields["seen"])
        self.slow_sum = _load(fields["slow_sum"])
        self.value_f = _load(fields["value_f"])
        self.value_s = _load(fields["value_s"])
        self._recent = _loads(fields["recent"])
        self.signal._restore(fields["signal"])


class BBandsState(IndicatorState):
    """Bollinger Bands: TA-Lib's running-sum SMA for the middle band; the population deviation
    from the window itself (mean squared distance from that middle band).

    The deviation is O(period) per bar on purpose: one-pass running sums of x and x**2 cancel
    catastrophically when the window is nearly flat (a rounding residue of 1e-14 becomes a
    deviation of 1e-7), where TA-Lib's deviation stays exact; the two-pass form agrees with it
    to ~1e-12 everywhere, and 20 floats cost about a microsecond.
    """

    kind = "bbands"
    __slots__ = ("k", "period", "total", "window")

    def __init__(self, spec: Indicator, period: int, k: float) -> None:
        super().__init__(spec)
        self.period = period
        self.k = k
        self.total = 0.0
        self.window: deque[float] = deque(maxlen=period)

    def _advance(self, bar: BarTuple) -> tuple[float, ...]:
        c = bar[4]
        window = self.window
        self.total += c
        window.append(c)
        if len(window) < self.period:
            return (NAN, NAN, NAN)
        middle = self.total / self.period
        self.total -= window[0]
        squares = 0.0
        for x in window:
            squares += (x - middle) * (x - middle)
        width = math.sqrt(squares / self.period) * self.k
        return (middle + width, middle, middle - width)

    def _fields(self) -> dict[str, Any]:
        return {"total": _dump(self.total), "window": _dumps(self.window)}

    def _restore(self, fields: Mapping[str, Any]) -> None:
        self.total = _load(fields["total"])
        self.window = deque(_loads(fields["window"]), maxlen=self.period)


class ATRState(IndicatorState):
    """Wilder's ATR: the mean true range of bars 1..period, then the batch kernel's
    `Smoothing` with a = (period - 1) / period, b = 1 / period (the first bar has no
    previous close and no true range, as in TA-Lib)."""

    kind = "atr"
    __slots__ = ("period", "prev_close", "seen", "smoothing", "value")

    def __init__(self, spec: Indicator, period: int) -> None:
        super().__init__(spec)
        self.period = period
        self.smoothing = Smoothing((period - 1) / period, 1.0 / period)
        self.prev_close = NAN
        self.seen = 0  # true ranges seen
        self.value = 0.0

    def _advance(self, bar: BarTuple) -> tuple[float, ...]:
        _, _, h, lo, c, _ = bar
        return (self.push(h, lo, c),)

    def push(self, h: float, lo: float, c: float) -> float:
        prev, self.prev_close = self.prev_close, c
        if math.isnan(prev):
            return NAN
        tr = h - lo
        tr = max(tr, abs(prev - h))
        tr = max(tr, abs(lo - prev))
        if self.seen >= self.period:
            self.value = self.smoothing.push(tr)
            return self.value
        self.seen += 1
        self.value += tr
        if self.seen < self.period:
            return NAN
        self.value /= self.period
        self.smoothing.start(self.value)
        return self.value

    def _fields(self) -> dict[str, Any]:
        return {
            "prev_close": _dump(self.prev_close),
            "seen": self.seen,
            "value": _dump(self.value),
            "smoothing": self.smoothing.to_dict(),
        }

    def _restore(self, fields: Mapping[str, Any]) -> None:
        self.prev_close = _load(fields["prev_close"])
        self.seen = int(fields["seen"])
        self.value = _load(fields["value"])
        self.smoothing.restore(fields["smoothing"])


# ---- rolling percentiles ---------------------------------------------------------------------


class RollingPercentile:
    """Mid-rank percentile of each value among the last `window` (itself included); NaN values
    hold their slot but are not ranked. Same rule as `kernels.rolling_percentile`."""

    __slots__ = ("ranked", "recent", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.recent: deque[float] = deque(maxlen=window)
        self.ranked: list[float] = []

    def push(self, x: float) -> float:
        recent, ranked = self.recent, self.ranked
        if len(recent) == self.window:
            old = recent[0]
            if not math.isnan(old):
                del ranked[bisect.bisect_left(ranked, old)]
        recent.append(x)
        if math.isnan(x):
            return NAN
        bisect.insort(ranked, x)
        if len(recent) < self.window:
            return NAN
        below = bisect.bisect_left(ranked, x)
        above = bisect.bisect_right(ranked, x)
        return (below + 0.5 * (above - below)) / len(ranked)

    def to_list(self) -> list[float | str | None]:
        return _dumps(self.recent)

    def restore(self, values: object) -> None:
        self.recent = deque(_loads(values), maxlen=self.window)
        self.ranked = sorted(x for x in self.recent if not math.isnan(x))


class VolumePercentileState(IndicatorState):
    """Percentile of each bar's volume within the last `window` bars."""

    kind = "volume_pct"
    __slots__ = ("rank",)

    def __init__(self, spec: Indicator, window: int) -> None:
        super().__init__(spec)
        self.rank = RollingPercentile(window)

    def _advance(self, bar: BarTuple) -> tuple[float, ...]:
        _, _, _, _, _, v = bar
        return (self.rank.push(v),)

    def _fields(self) -> dict[str, Any]:
        return {"recent": self.rank.to_list()}

    def _restore(self, fields: Mapping[str, Any]) -> None:
        self.rank.restore(fields["recent"])


class ATRRegimeState(IndicatorState):
    """ATR percentile among the last `lookback` ATRs, as a -1 / 0 / +1 regime code."""

    kind = "atr_regime"
    __slots__ = ("atr", "high", "low", "rank")

    def __init__(
        self, spec: Indicator, period: int, lookback: int, low: float, high: float
    ) -> None:
        super().__init__(spec)
        self.atr = ATRState(spec, period)
        self.rank = RollingPercentile(lookback)
        self.low, self.high = low, high

    def _advance(self, bar: BarTuple) -> tuple[float, ...]:
        _, _, h, lo, c, _ = bar
        value = self.atr.push(h, lo, c)
        if math.isnan(value):
            return (NAN,)
        pct = self.rank.push(value)
        if math.isnan(pct):
            return (NAN,)
        return (-1.0 if pct <= self.low else (1.0 if pct >= self.high else 0.0),)

    def _fields(self) -> dict[str, Any]:
        return {"atr": self.atr._fields(), "recent": self.rank.to_list()}

    def _restore(self, fields: Mapping[str, Any]) -> None:
        self.atr._restore(fields["atr"])
        self.rank.restore(fields["recent"])


# ---- session indicators ----------------------------------------------------------------------


class _SessionState(IndicatorState):
    """Tracks the calendar session of the latest bar: a bisect only when a bar leaves it."""

    __slots__ = ("calendar", "close_ns", "open_ns")

    def __init__(self, spec: Indicator, calendar: str) -> None:
        super().__init__(spec)
        self.calendar = calendar
        self.open_ns = 0
        self.close_ns = 0  # empty: the first bar looks its session up

    def _session(self, ts: int) -> bool:
        """True if `ts` is in a session; resets the running values when a new one starts."""
        if self.open_ns <= ts < self.close_ns:
            return True
        found = sessions(self.calendar).locate(ts)
        if found is None:
            return False
        self.open_ns, self.close_ns = found
        self._new_session()
        return True

    def _new_session(self) -> None:
        raise NotImplementedError

    def _session_fields(self) -> dict[str, Any]:
        return {"open_ns": self.open_ns, "close_ns": self.close_ns}

    def _restore_session(self, fields: Mapping[str, Any]) -> None:
        self.open_ns = int(fields["open_ns"])
        self.close_ns = int(fields["close_ns"])


class SessionVWAPState(_SessionState):
    """Running sums of typical price x volume and volume since the session opened."""

    kind = "session_vwap"
    __slots__ = ("pv", "volume")

    def __init__(self, spec: Indicator, calendar: str) -> None:
        super().__init__(spec, calendar)
        self.pv = 0.0
        self.volume = 0.0

    def _new_session(self) -> None:
        self.pv = 0.0
        self.volume = 0.0

    def _advance(self, bar: BarTuple) -> tuple[float, ...]:
        ts, _, h, lo, c, v = bar
        if not self._session(ts):
            return (NAN,)
        if not math.isnan(v):
            self.pv += (h + lo + c) * v  # three times the typical price, as the batch kernel
            self.volume += v
        return (self.pv / (3.0 * self.volume) if self.volume > 0.0 else NAN,)

    def _fields(self) -> dict[str, Any]:
        return {**self._session_fields(), "pv": self.pv, "volume": self.volume}

    def _restore(self, fields: Mapping[str, Any]) -> None:
        self._restore_session(fields)
        self.pv = _load(fields["pv"])
        self.volume = _load(fields["volume"])


class OpeningRangeState(_SessionState):
    """High and low of the session's first `minutes`, then a breakout code per later bar."""

    kind = "opening_range"
    __slots__ = ("hi", "lo", "span")

    def __init__(self, spec: Indicator, minutes: int, calendar: str) -> None:
        super().__init__(spec, calendar)
        self.span = minutes * 60_000_000_000
        self.hi = -math.inf
        self.lo = math.inf

    def _new_session(self) -> None:
        self.hi = -math.inf
        self.lo = math.inf

    def _advance(self, bar: BarTuple) -> tuple[float, ...]:
        ts, _, h, lo, c, _ = bar
        if not self._session(ts):
            return (NAN, NAN, NAN)
        if ts - self.open_ns < self.span:
            self.hi = max(self.hi, h)
            self.lo = min(self.lo, lo)
            return (NAN, NAN, NAN)
        top, bottom = self.hi, self.lo
        if not top >= bottom:
            return (NAN, NAN, NAN)
        return (top, bottom, 1.0 if c > top else (-1.0 if c < bottom else 0.0))

    def _fields(self) -> dict[str, Any]:
        return {**self._session_fields(), "hi": _dump(self.hi), "lo": _dump(self.lo)}

    def _restore(self, fields: Mapping[str, Any]) -> None:
        self._restore_session(fields)
        self.hi = _load(fields["hi"])
        self.lo = _load(fields["lo"])
