"""Batch indicator kernels over numpy arrays (a pandas Series in gives a Series out).

TA-Lib is the reference the values must equal. RSI, MACD and Bollinger Bands call TA-Lib
itself: compiled C, as fast as the reference by construction, no second implementation.
SMA, EMA and ATR are numba kernels, because each must also check its prices are finite and a
separate checking pass made them miss the speed targets (>= 50% of TA-Lib's throughput and
>= 5x pandas): SMA is a running sum of (newest - oldest) times 1/period, re-summed exactly
every few thousand bars so rounding cannot drift; EMA and ATR run TA-Lib's recurrence four
bars per dependent step (`_smooth`), faster than TA-Lib's one-bar-at-a-time chain. All three
equal TA-Lib to 1e-9 (tested over long series), and their incremental states
(`tradeos_lab.indicators.states`) repeat the kernels' operations, so feeding bars one at a
time gives the batch floats exactly (property-tested). The states of the TA-Lib-backed
indicators reproduce TA-Lib's seeding and order of operations, equal to about one unit in
the last place.
This relies on TA-Lib's defaults (unstable period 0, default compatibility): a process that
changes them with `talib.set_unstable_period` changes the batch values and breaks that match.
The indicators TA-Lib lacks (rolling percentile, ATR regime, session VWAP, opening range) are
numba kernels doing the same arithmetic as their incremental states.

Every kernel refuses bad input with `ValidationError`: non-finite prices (TA-Lib would silently
propagate a NaN through every later value) and a window longer than the data (all-NaN output).
A NaN volume is an unknown volume: session VWAP leaves that bar out of both its sums, the
volume percentile ranks only the known volumes of its window and is NaN at that bar; an
infinite or negative volume is refused.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar, cast

import numba
import numpy as np
import pandas as pd
import talib

from tradeos_lab.errors import ValidationError
from tradeos_lab.indicators.sessions import Sessions, session_at, sessions

ArrayLike = TypeVar("ArrayLike", np.ndarray, pd.Series)
_NS_PER = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000}
_NAT = np.iinfo(np.int64).min

# ---- input checks ----------------------------------------------------------------------------


def as_prices(values: Any, name: str = "close") -> np.ndarray:
    """`values` as a contiguous float64 array, or `ValidationError` if any is NaN or infinite."""
    array = as_floats(values, name)
    # A sum of finite prices is finite, any NaN or infinity makes it non-finite: one pass
    # without a temporary array; only a non-finite sum (or an overflow) checks element-wise.
    if not math.isfinite(float(array.sum())) and not np.isfinite(array).all():
        raise ValidationError(f"{name} has NaN or infinite values")
    return array


def as_volumes(values: Any, name: str = "volume") -> np.ndarray:
    """`values` as float64; NaN (unknown volume) is allowed, infinities and negatives are not."""
    array = as_floats(values, name)
    bad = _first_bad_volume(array)
    if bad >= 0:
        what = "infinite" if np.isinf(array[bad]) else "negative"
        raise ValidationError(f"{name} has {what} values (the first at row {bad})")
    return array


@numba.njit(cache=True)
def _first_bad_volume(v: np.ndarray) -> int:
    """Index of the first infinite or negative volume (NaN is allowed), else -1: a branch-free
    pass (vectorised), then a search only when it found one."""
    bad = False
    for i in range(len(v)):
        bad |= (v[i] < 0.0) | (v[i] == np.inf)
    if bad:
        for i in range(len(v)):
            if v[i] < 0.0 or v[i] == np.inf:
                return i
    return -1


def _refuse_non_finite(bad: int, h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> None:
    """`ValidationError` naming the column and row `bad` of a non-finite price (-1: none)."""
    if bad < 0:
        return
    for name, values in (("high", h), ("low", lo), ("close", c)):
        if not math.isfinite(values[bad]):
            raise ValidationError(f"{name} has NaN or infinite values (the first at row {bad})")


@numba.njit(cache=True)
def _first_non_finite_price(h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> int:
    """The first row where high, low or close is NaN or infinite, else -1."""
    for i in range(len(c)):
        if h[i] - h[i] != 0.0 or lo[i] - lo[i] != 0.0 or c[i] - c[i] != 0.0:
            return i
    return -1


def check_length(n: int, needed: int, what: str) -> None:
    """`ValidationError` when `n` values cannot give one defined value of `what`."""
    if n < needed:
        raise ValidationError(f"{what} needs at least {needed} bars, got {n}")


def epoch_times(ts: Any) -> tuple[np.ndarray, int]:
    """Bar open times as epoch integers in their own unit and the nanoseconds per unit,
    strictly increasing, or `ValidationError` (the kernels take them so, without a pass to
    convert them to nanoseconds)."""
    stamps, unit = _epoch_integers(ts)
    _check_order(stamps)
    return stamps, unit


def check_times(ts: Any) -> np.ndarray:
    """Bar open times as epoch nanoseconds, strictly increasing, or `ValidationError`."""
    stamps, unit = epoch_times(ts)
    return stamps if unit == 1 else stamps * unit


def _epoch_integers(ts: Any) -> tuple[np.ndarray, int]:
    """Times as epoch integers in their own unit, and the factor to nanoseconds."""
    if isinstance(ts, np.ndarray) and ts.dtype == np.int64:
        return ts, 1  # already epoch nanoseconds
    if isinstance(ts, pd.Series | pd.Index) and ts.dtype.kind == "M":
        # a datetime column (naive = UTC): its integers as they are, no parsing
        times = cast(pd.arrays.DatetimeArray, ts.array)
        ints = times.asi8  # type: ignore[attr-defined]  # public, missing from pandas-stubs
        return np.asarray(ints, dtype=np.int64), _NS_PER.get(times.unit, 1)
    try:
        stamps = pd.DatetimeIndex(pd.to_datetime(ts, utc=True))
    except (ValueError, TypeError) as e:
        raise ValidationError(f"bars have unparseable timestamps: {e}") from None
    return np.asarray(stamps.as_unit("ns").asi8, dtype=np.int64), 1


def _check_order(stamps: np.ndarray) -> None:
    order = _time_order(stamps)
    if order == -2:
        raise ValidationError("bars have missing timestamps")
    if order == 0:
        raise ValidationError("bars have duplicate timestamps")
    if order < 0:
        raise ValidationError("bars have unsorted timestamps (they must be in time order)")


@numba.njit(cache=True)
def _time_order(ns: np.ndarray) -> int:
    """1 if strictly increasing; else what comes first: -2 a missing time (NaT), 0 a repeat,
    -1 a step back. The common case is one branch-free (vectorised) pass."""
    ok = True
    for i in range(1, len(ns)):
        ok &= ns[i] > ns[i - 1]
    if ok and (len(ns) == 0 or ns[0] != _NAT):  # NaT is the smallest integer: only first
        return 1
    for i in range(len(ns)):
        if ns[i] == _NAT:
            return -2
        if i and ns[i] <= ns[i - 1]:
            return 0 if ns[i] == ns[i - 1] else -1
    return 1


def as_floats(values: Any, name: str) -> np.ndarray:
    """`values` as a contiguous one-dimensional float64 array (NaN allowed)."""
    try:
        array = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
    except (ValueError, TypeError):
        raise ValidationError(f"{name} is not numeric") from None
    if array.ndim != 1:
        raise ValidationError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _like(template: ArrayLike, array: np.ndarray, name: str) -> ArrayLike:
    """A Series with `template`'s index when the input was a Series, else the array."""
    if isinstance(template, pd.Series):
        return pd.Series(array, index=template.index, name=name)
    return array


def check_period(value: int, name: str, minimum: int = 2) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValidationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ---- TA-Lib indicators -----------------------------------------------------------------------


def sma(close: ArrayLike, period: int) -> ArrayLike:
    """Simple moving average, TA-Lib's SMA to 1e-9 relative; defined from index `period - 1`.

    A numba running sum (`_sma`): one dependent addition of (newest - oldest) per bar, times a
    precomputed 1/period, re-summed exactly every `sma_block(period)` bars so the rounding of
    the running sum cannot drift. The incremental `SMAState` does the same operations at the
    same bars, so both give the same floats.
    """
    x = as_floats(close, "close")
    check_length(len(x), check_period(period, "period"), f"SMA({period})")
    out, bad = _sma(x, period)
    if bad >= 0:
        raise ValidationError(f"close has NaN or infinite values (the first at row {bad})")
    return _like(close, out, f"sma_{period}")


@numba.njit(cache=True)
def sma_block(period: int) -> int:
    """Bars between two exact re-summations of the SMA's running sum: long enough that the
    re-summation costs a few percent, short enough that rounding cannot accumulate."""
    return max(4096, 8 * period)


@numba.njit(cache=True)
def _sma(x: np.ndarray, period: int) -> tuple[np.ndarray, int]:
    """The SMA and the first non-finite row (-1 if none).

    No per-bar check: a NaN or an infinity that enters a running sum keeps it non-finite
    until the next re-summation (inf - inf is NaN), so a finite sum at the end of each block
    proves every value of the block finite; only otherwise is the array searched.
    """
    n = len(x)
    out = np.empty(n)
    out[: period - 1] = np.nan
    inverse = 1.0 / period
    finite = True
    for start in range(period - 1, n, sma_block(period)):
        end = min(start + sma_block(period), n)
        total = _sma_block(x[start - period + 1 : end], out[start:end], period, inverse)
        finite &= total - total == 0.0
    return out, -1 if finite else _first_non_finite(x)


@numba.njit(cache=True)
def _sma_block(x: np.ndarray, out: np.ndarray, period: int, inverse: float) -> float:
    """One block: `x` holds its values and the `period - 1` before them, `out` its outputs.
    (A function of its own: indices from 0 let the compiler drop negative-index handling.)"""
    total = 0.0
    for j in range(period):
        total += x[j]
    out[0] = total * inverse
    for i in range(period, len(x)):
        total += x[i] - x[i - period]
        out[i - period + 1] = total * inverse
    return total


def ema(close: ArrayLike, period: int) -> ArrayLike:
    """Exponential moving average, k = 2/(period+1), seeded with the SMA of the first `period`
    values (TA-Lib EMA's values to 1e-9); defined from index `period - 1`.

    Numba: the recurrence in one pass, which also proves every price finite (`_ema`); only
    otherwise is the array searched for the first bad row. TA-Lib's form e = (x - e) * k + e
    is one chain of dependent operations per bar, slower than the >= 5x pandas `ewm` target
    allows, so the kernel runs the same recurrence as e = (1 - k) e + k x four bars per
    dependent step (`_smooth`); the values differ from TA-Lib's by rounding only.
    """
    x = as_floats(close, "close")
    check_length(len(x), check_period(period, "period"), f"EMA({period})")
    out, bad = _ema(x, period)
    if bad >= 0:
        raise ValidationError(f"close has NaN or infinite values (the first at row {bad})")
    return _like(close, out, f"ema_{period}")


@numba.njit(cache=True)
def _ema(x: np.ndarray, period: int) -> tuple[np.ndarray, int]:
    """The EMA and the first non-finite row (-1 if none). No per-bar check: a NaN or an
    infinity that enters the recurrence keeps every later value non-finite (the weights are
    positive; inf - inf is NaN), so a finite last value proves every price finite."""
    n = len(x)
    out = np.empty(n)
    out[: period - 1] = np.nan
    total = 0.0
    for i in range(period):
        total += x[i]  # TA-Lib's seed: the plain running sum of the first `period`, divided
    out[period - 1] = total / period
    k = 2.0 / (period + 1)
    _smooth(out[period - 1 :], x[period - 1 :], 1.0 - k, k)
    last = out[n - 1]
    return out, -1 if last - last == 0.0 else _first_non_finite(x)


@numba.njit(cache=True)
def _first_non_finite(x: np.ndarray) -> int:
    """Index of the first NaN or infinite value, else -1: a branch-free pass (vectorised),
    then a search only when it found one."""
    ok = True
    for i in range(len(x)):
        ok &= x[i] - x[i] == 0.0  # False for NaN and for infinities
    if ok:
        return -1
    for i in range(len(x)):
        if x[i] - x[i] != 0.0:
            return i
    return -1


@numba.njit(cache=True)
def _smooth(out: np.ndarray, y: np.ndarray, a: float, b: float) -> None:
    """out[i] = a * out[i - 1] + b * y[i] for i >= 1, out[0] given (in place; `y` may be `out`).

    Written four bars per step: out[i + 4] = a^4 out[i] + (a^3 b y[i+1] + ... + b y[i+4]), so
    the chain of dependent operations is one multiply-add per four bars instead of per bar,
    and the rest runs in parallel. Same recurrence; it differs only by rounding. (Callers pass
    slices: indices from 0 let the compiler drop negative-index handling.)
    """
    a2 = a * a
    a3 = a2 * a
    a4 = a3 * a
    e = out[0]
    steps = (len(out) - 1) // 4
    for q in range(steps):
        i = 4 * q + 1
        y1 = b * y[i]
        s2 = y1 * a + b * y[i + 1]
        s3 = s2 * a + b * y[i + 2]
        s4 = s3 * a + b * y[i + 3]
        out[i] = e * a + y1
        out[i + 1] = e * a2 + s2
        out[i + 2] = e * a3 + s3
        e = e * a4 + s4
        out[i + 3] = e
    i = 4 * steps + 1
    n = len(out)
    _last_block(
        out,
        i,
        (y[i] if i < n else 0.0, y[i + 1] if i + 1 < n else 0.0, y[i + 2] if i + 2 < n else 0.0),
        e,
        (a, a2, a3, b),
    )


@numba.njit(cache=True)
def _last_block(
    out: np.ndarray,
    i: int,
    y: tuple[float, float, float],
    e: float,
    weights: tuple[float, float, float, float],
) -> None:
    """The last, partial step of `_smooth` (out[i:], fewer than four values) in the form of a
    full one: a value never depends on how many bars follow it, and the incremental states,
    which cannot know that, repeat the same operations."""
    a, a2, a3, b = weights
    rest = len(out) - i
    if rest > 0:
        s = b * y[0]
        out[i] = e * a + s
        if rest > 1:
            s = s * a + b * y[1]
            out[i + 1] = e * a2 + s
            if rest > 2:
                s = s * a + b * y[2]
                out[i + 2] = e * a3 + s


def rsi(close: ArrayLike, period: int = 14) -> ArrayLike:
    """Relative strength index with Wilder's smoothing (TA-Lib RSI); defined from `period`."""
    x = as_prices(close)
    check_length(len(x), check_period(period, "period") + 1, f"RSI({period})")
    return _like(close, talib.RSI(x, period), f"rsi_{period}")


def macd(
    close: ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[ArrayLike, ArrayLike, ArrayLike]:
    """MACD line, signal line and histogram (TA-Lib MACD): all three defined from index
    `slow + signal - 2`, as TA-Lib reports them."""
    x = as_prices(close)
    check_macd(fast, slow, signal)
    check_length(len(x), slow + signal - 1, f"MACD({fast},{slow},{signal})")
    line, sig, hist = talib.MACD(x, fast, slow, signal)
    tag = f"{fast}_{slow}_{signal}"
    return (
        _like(close, line, f"macd_{tag}"),
        _like(close, sig, f"macd_signal_{tag}"),
        _like(close, hist, f"macd_hist_{tag}"),
    )


def bbands(
    close: ArrayLike, period: int = 20, k: float = 2.0
) -> tuple[ArrayLike, ArrayLike, ArrayLike]:
    """Bollinger Bands: SMA +- k population standard deviations (TA-Lib BBANDS, matype SMA)."""
    x = as_prices(close)
    k = check_positive(k, "k")
    check_length(len(x), check_period(period, "period"), f"BBands({period},{k:g})")
    upper, middle, lower = talib.BBANDS(
        x,
        period,
        k,
        k,
        talib.MA_Type.SMA,  # type: ignore[attr-defined]  # missing from its stubs
    )
    tag = f"{period}_{k:g}"
    return (
        _like(close, upper, f"bb_upper_{tag}"),
        _like(close, middle, f"bb_middle_{tag}"),
        _like(close, lower, f"bb_lower_{tag}"),
    )


def atr(high: ArrayLike, low: ArrayLike, close: ArrayLike, period: int = 14) -> ArrayLike:
    """Average true range with Wilder's smoothing, seeded with the mean true range of bars
    1..period (TA-Lib ATR's values to 1e-9); defined from index `period`.

    One numba pass (`_atr`): the smoothing atr = (atr * (period - 1) + tr) / period four bars
    per dependent step as in `_smooth`, the true ranges computed as it reads them and the
    three price columns checked finite on the way (separate passes would cost more than
    TA-Lib's whole call).
    """
    h, lo, c = _hlc(high, low, close)
    check_length(len(c), check_period(period, "period") + 1, f"ATR({period})")
    out, bad = _atr(h, lo, c, period)
    _refuse_non_finite(bad, h, lo, c)
    return _like(close, out, f"atr_{period}")


@numba.njit(cache=True)
def _atr(h: np.ndarray, lo: np.ndarray, c: np.ndarray, period: int) -> tuple[np.ndarray, int]:
    """The ATR and the first row with a non-finite price (-1 if none), in one pass: true
    ranges computed where the smoothing reads them, never stored.

    The check costs almost nothing: a NaN or an infinite high or low makes its true range NaN
    or +inf (see `_true_range`), which keeps every later ATR non-finite, so a finite last ATR
    proves every high and low finite; the closes (a NaN close drops out of the true range's
    maxima) are summed on the way, a sum that is finite exactly when they all are.
    """
    n = len(c)
    out = np.empty(n)
    out[:period] = np.nan
    check = (h[0] + lo[0]) + c[n - 1]  # bar 0 has no true range; the last close is no `prev`
    total = 0.0
    for i in range(1, period + 1):
        total += _true_range(h[i], lo[i], c[i - 1])
        check += c[i - 1]
    out[period] = total / period
    check += _smooth_true_range(
        out[period:], h[period:], lo[period:], c[period - 1 :], (period - 1) / period, 1.0 / period
    )
    check += out[n - 1]
    return out, -1 if check - check == 0.0 else _first_non_finite_price(h, lo, c)


@numba.njit(cache=True)
def _true_range(h: float, lo: float, prev: float) -> float:
    """TA-Lib's true range, max(h - lo, |prev - h|, |lo - prev|), its operations in its order
    (the incremental state's too). Written as selects that keep a NaN or an infinity of `h`
    or `lo` (NaN or +inf out; a NaN `prev` is dropped: the caller checks the closes)."""
    tr = h - lo
    up = abs(prev - h)
    tr = up if up > tr else tr
    down = abs(lo - prev)
    return down if down > tr else tr


@numba.njit(cache=True)
def _smooth_true_range(  # noqa: PLR0917 (a numba kernel takes its arrays positionally)
    out: np.ndarray, h: np.ndarray, lo: np.ndarray, prev: np.ndarray, a: float, b: float
) -> float:
    """`_smooth` of the true ranges of (h[i], lo[i], prev[i]) for i >= 1, the same operations;
    returns the sum of prev[1:] (the closes it read) for the caller's finite check."""
    a2 = a * a
    a3 = a2 * a
    a4 = a3 * a
    e = out[0]
    check = 0.0
    steps = (len(out) - 1) // 4
    for q in range(steps):
        i = 4 * q + 1
        y1 = b * _true_range(h[i], lo[i], prev[i])
        s2 = y1 * a + b * _true_range(h[i + 1], lo[i + 1], prev[i + 1])
        s3 = s2 * a + b * _true_range(h[i + 2], lo[i + 2], prev[i + 2])
        s4 = s3 * a + b * _true_range(h[i + 3], lo[i + 3], prev[i + 3])
        out[i] = e * a + y1
        out[i + 1] = e * a2 + s2
        out[i + 2] = e * a3 + s3
        e = e * a4 + s4
        out[i + 3] = e
        check += (prev[i] + prev[i + 1]) + (prev[i + 2] + prev[i + 3])
    i = 4 * steps + 1
    n = len(out)
    y = [0.0, 0.0, 0.0]
    for j in range(i, n):
        y[j - i] = _true_range(h[j], lo[j], prev[j])
        check += prev[j]
    _last_block(out, i, (y[0], y[1], y[2]), e, (a, a2, a3, b))
    return check


def check_macd(fast: int, slow: int, signal: int) -> None:
    check_period(fast, "fast")
    check_period(slow, "slow")
    check_period(signal, "signal")
    if fast >= slow:
        raise ValidationError(f"MACD needs fast < slow, got fast={fast}, slow={slow}")


def check_positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < np.inf:
        raise ValidationError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _hlc(high: Any, low: Any, close: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three price columns as float64 arrays of one length (the kernels that read them
    check they are finite, in their own pass)."""
    h, lo, c = as_floats(high, "high"), as_floats(low, "low"), as_floats(close, "close")
    if not len(h) == len(lo) == len(c):
        raise ValidationError("high, low and close have different lengths")
    return h, lo, c


# ---- rolling percentile and ATR regime ----------------------------------------------------


def rolling_percentile(values: ArrayLike, window: int) -> ArrayLike:
    """Mid-rank percentile of each value among the last `window` values (itself included):
    (count below + half the count equal) / count known. 1.0 is the largest of the window.

    Defined once `window` values have been seen; NaN values are unknown: they take their slot
    in the window but are not ranked, and a NaN value's own percentile is NaN.
    """
    x = as_floats(values, "values")
    if np.isinf(x).any():
        raise ValidationError("values have infinite entries")
    check_length(len(x), check_period(window, "window", 1), f"a percentile over {window}")
    return _like(values, _rolling_percentile(x, window), "percentile")


@numba.njit(cache=True)
def _rolling_percentile(x: np.ndarray, window: int) -> np.ndarray:
    # Both forms count, per value, the known values of its window below it and equal to it,
    # so they give the same floats (and the same as the incremental state's sorted window).
    if window <= _COUNTING_MAX_WINDOW:
        return _percentile_by_counting(x, window)
    return _percentile_by_sorted_window(x, window)


# Up to this window, counting every value of the window (a branch-free loop over a slice the
# compiler vectorises) beats the sorted window, whose search and shift cost unpredictable
# branches; measured over 1M volumes: window 100 counting 3x faster, 1000 still 2.4x. Above,
# the sorted window's O(log window) search and one contiguous slide (a third of the window on
# average) cost less than a full count per value.
_COUNTING_MAX_WINDOW = 1024


@numba.njit(cache=True)
def _percentile_by_counting(x: np.ndarray, window: int) -> np.ndarray:
    n = len(x)
    out = np.full(n, np.nan)
    known = 0  # values in the window that are not NaN
    for i in range(n):
        known += 0 if np.isnan(x[i]) else 1
        if i >= window:
            known -= 0 if np.isnan(x[i - window]) else 1
        v = x[i]
        if i < window - 1 or np.isnan(v):
            continue
        values = x[i - window + 1 : i + 1]
        below = 0
        equal = 0
        for j in range(window):
            below += values[j] < v
            equal += values[j] == v
        out[i] = (below + 0.5 * equal) / known
    return out


@numba.njit(cache=True)
def _percentile_by_sorted_window(x: np.ndarray, window: int) -> np.ndarray:  # noqa: PLR0912 (one pass over the values: its four cases read best side by side)
    """O(log window) search per value: the known values of the window kept sorted; the value
    leaving is found by bisection and the arriving one slides into its place."""
    n = len(x)
    out = np.full(n, np.nan)
    ranked = np.empty(window)
    m = 0  # known values in the window, sorted in ranked[:m]
    for i in range(n):
        v = x[i]
        old = x[i - window] if i >= window else np.nan
        if not np.isnan(old):
            j = _lower_bound(ranked, m, old)
            if np.isnan(v):  # the window loses a known value: close the gap
                m -= 1
                for q in range(j, m):
                    ranked[q] = ranked[q + 1]
                continue
            if v > old:  # slide the values between old and v down into old's slot
                while j + 1 < m and ranked[j + 1] < v:
                    ranked[j] = ranked[j + 1]
                    j += 1
            else:
                while j > 0 and ranked[j - 1] >= v:
                    ranked[j] = ranked[j - 1]
                    j -= 1
        elif np.isnan(v):
            continue
        else:  # the window gains a known value
            j = m
            m += 1
            while j > 0 and ranked[j - 1] >= v:
                ranked[j] = ranked[j - 1]
                j -= 1
        ranked[j] = v  # j: the count of known values below v
        if i >= window - 1:
            q = j + 1
            while q < m and ranked[q] == v:
                q += 1
            out[i] = (j + 0.5 * (q - j)) / m
    return out


@numba.njit(cache=True)
def _lower_bound(ranked: np.ndarray, m: int, v: float) -> int:
    """The count of ranked[:m] (sorted) below v, by branch-free bisection."""
    if m == 0:
        return 0
    base = 0
    size = m
    while size > 1:
        half = size >> 1
        base = base + half if ranked[base + half] < v else base
        size -= half
    return base + (1 if ranked[base] < v else 0)


def regime_code(percentile: float, low: float, high: float) -> float:
    """-1 (low volatility) at or below `low`, +1 (high) at or above `high`, else 0; NaN stays."""
    if np.isnan(percentile):
        return percentile
    return -1.0 if percentile <= low else (1.0 if percentile >= high else 0.0)


def atr_regime(
    high: ArrayLike,
    low: ArrayLike,
    close: ArrayLike,
    period: int = 14,
    *,
    lookback: int = 100,
    low_pct: float = 0.25,
    high_pct: float = 0.75,
) -> ArrayLike:
    """Volatility regime: the ATR's mid-rank percentile among the symbol's last `lookback` ATRs
    mapped to -1 low / 0 normal / +1 high (`regime_code`); defined from `period + lookback - 1`.
    """
    h, lo, c = _hlc(high, low, close)
    check_regime(period, lookback, low_pct, high_pct)
    check_length(len(c), period + lookback, f"ATR regime({period},{lookback})")
    values, bad = _atr(h, lo, c, period)  # the `atr` kernel: the states' floats, checked
    _refuse_non_finite(bad, h, lo, c)
    out = np.full(len(c), np.nan)
    pct = _rolling_percentile(values[period:], lookback)
    _regime_codes(pct, low_pct, high_pct, out[period:])
    return _like(close, out, f"atr_regime_{period}_{lookback}")


@numba.njit(cache=True)
def _regime_codes(pct: np.ndarray, low: float, high: float, out: np.ndarray) -> None:
    """`regime_code` of each percentile into `out`, in one pass (NaN stays NaN)."""
    for i in range(len(pct)):
        p = pct[i]
        out[i] = p if np.isnan(p) else (-1.0 if p <= low else (1.0 if p >= high else 0.0))


def check_regime(period: int, lookback: int, low: float, high: float) -> None:
    check_period(period, "period")
    check_period(lookback, "lookback", 1)
    for value, name in ((low, "low"), (high, "high")):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(f"{name} must be a number, got {value!r}")
    if not 0.0 <= low < high <= 1.0:
        raise ValidationError(f"ATR regime thresholds need 0 <= low < high <= 1, got {low}, {high}")


# ---- session indicators ----------------------------------------------------------------------


def session_vwap(
    ts: Any, high: Any, low: Any, close: Any, volume: Any, *, calendar: str = "24/7"
) -> np.ndarray:
    """Volume-weighted average of the typical price (high + low + close) / 3 since the session
    opened; NaN outside sessions and until the session has traded volume. A NaN volume leaves
    the bar out of both sums."""
    stamps, unit = epoch_times(ts)
    h, lo, c = as_floats(high, "high"), as_floats(low, "low"), as_floats(close, "close")
    return session_vwap_epoch(stamps, unit, h, lo, c, as_volumes(volume), calendar=calendar)


def session_vwap_epoch(  # noqa: PLR0917 (the bar columns, positionally as everywhere here)
    stamps: np.ndarray,
    unit: int,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    *,
    calendar: str,
) -> np.ndarray:
    """`session_vwap` of float64 columns whose times (`epoch_times`: epoch integers, `unit`
    ns each, in order) and volumes (`as_volumes`) are already checked; the prices are checked
    finite here, in the kernel's pass."""
    book = _session_book(stamps, unit, (h, lo, c, v), calendar, "session VWAP")
    out, bad = _session_vwap(stamps, unit, book.opens, book.closes, h, lo, c, v)
    _refuse_non_finite(bad, h, lo, c)
    return out


def _session_book(
    stamps: np.ndarray, unit: int, columns: tuple[np.ndarray, ...], calendar: str, what: str
) -> Sessions:
    """The calendar's sessions, once the columns are known to fit them (same lengths, at
    least one bar, every time within the calendar's range)."""
    if any(len(column) != len(stamps) for column in columns):
        raise ValidationError(f"{what}: the bar columns have different lengths")
    check_length(len(stamps), 1, what)
    book = sessions(calendar)
    book.check_span(stamps, unit)
    return book


@numba.njit(cache=True)
def _next_session(
    ts: np.ndarray, i: int, unit: int, opens: np.ndarray, closes: np.ndarray
) -> tuple[int, int, int]:
    """(k, first, end): the next session k holding bars from row `i` on, the rows before
    `first` outside every session, the rows [first, end) in session k. Found by bisection,
    so a session costs O(log n), not a pass over its bars. `ts` are epoch integers of `unit`
    ns each: a bar is in [open, close) when ts >= ceil(open / unit) and ts < ceil(close /
    unit)."""
    t = ts[i] * unit
    k = session_at(t, opens)
    if t >= closes[k] and k + 1 < len(opens):
        k += 1  # bar i comes after session k: the next one has not opened yet
    first = i + np.searchsorted(ts[i:], -(-opens[k] // unit))
    end = first + np.searchsorted(ts[first:], -(-closes[k] // unit))
    if end == i:  # bar i is after the calendar's last session: the rest is outside
        return k, len(ts), len(ts)
    return k, first, end


@numba.njit(cache=True)
def _session_vwap(  # noqa: PLR0917 (a numba kernel takes its arrays positionally)
    ts: np.ndarray,
    unit: int,
    opens: np.ndarray,
    closes: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
) -> tuple[np.ndarray, int]:
    """The VWAP and the first row with a non-finite price (-1 if none), one loop per
    session. `check` sums every bar's high + low + close: finite exactly when all are."""
    n = len(c)
    out = np.empty(n)
    check = 0.0
    i = 0
    while i < n:
        _, first, end = _next_session(ts, i, unit, opens, closes)
        for j in range(i, first):  # outside every session
            out[j] = np.nan
            check += (h[j] + lo[j]) + c[j]
        check += _vwap_of_session(
            out[first:end], h[first:end], lo[first:end], c[first:end], v[first:end]
        )
        i = end
    return out, -1 if check - check == 0.0 else _first_non_finite_price(h, lo, c)


@numba.njit(cache=True)
def _vwap_of_session(
    out: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray
) -> float:
    """One session's VWAP into `out`; returns the sum of the bars' high + low + close.

    Sums of (high + low + close) * volume and of volume, divided by 3 once per bar: the
    incremental state does the same operations, so both give the same floats. A NaN volume
    counts as 0 in both sums (adding 0.0 leaves them as they were), without a branch.
    """
    pv = 0.0
    vol = 0.0
    check = 0.0
    for i in range(len(out)):
        typical3 = (h[i] + lo[i]) + c[i]
        w = v[i]
        w = 0.0 if np.isnan(w) else w
        pv += typical3 * w
        vol += w
        out[i] = pv / (3.0 * vol) if vol > 0.0 else np.nan
        check += typical3
    return check


def opening_range(
    ts: Any, high: Any, low: Any, close: Any, *, minutes: int, calendar: str = "24/7"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Opening range of each session: the high and low of the bars opening in its first
    `minutes`, and per later bar of the session a breakout code: +1 closing above the range,
    -1 below, 0 inside. NaN while the range forms, outside sessions and in sessions that had no
    bar in their first `minutes`."""
    stamps, unit = epoch_times(ts)
    h, lo, c = as_floats(high, "high"), as_floats(low, "low"), as_floats(close, "close")
    return opening_range_epoch(stamps, unit, h, lo, c, minutes=minutes, calendar=calendar)


def opening_range_epoch(
    stamps: np.ndarray,
    unit: int,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    *,
    minutes: int,
    calendar: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`opening_range` of float64 columns whose times are already checked (`epoch_times`:
    epoch integers, `unit` ns each, in order); the prices are checked in the kernel's pass."""
    check_period(minutes, "minutes", 1)
    book = _session_book(stamps, unit, (h, lo, c), calendar, "opening range")
    top, bottom, code, bad = _opening_range(
        stamps, unit, book.opens, book.closes, minutes * 60_000_000_000, h, lo, c
    )
    _refuse_non_finite(bad, h, lo, c)
    return top, bottom, code


@numba.njit(cache=True)
def _opening_range(  # noqa: PLR0917 (a numba kernel takes its arrays positionally)
    ts: np.ndarray,
    unit: int,
    opens: np.ndarray,
    closes: np.ndarray,
    span: int,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Range, breakout codes and the first row with a non-finite price (-1 if none), one
    loop per session; `check` sums every bar's high + low + close (finite when all are)."""
    n = len(c)
    top = np.empty(n)
    bottom = np.empty(n)
    code = np.empty(n)
    check = 0.0
    i = 0
    while i < n:
        k, first, end = _next_session(ts, i, unit, opens, closes)
        # the bars opening in the session's first `span` ns form its range
        formed = first + np.searchsorted(ts[first:end], -(-(opens[k] + span) // unit))
        hi = -np.inf
        low = np.inf
        for j in range(i, formed):
            if j >= first:
                hi = max(hi, h[j])
                low = min(low, lo[j])
            top[j] = np.nan
            bottom[j] = np.nan
            code[j] = np.nan
            check += (h[j] + lo[j]) + c[j]
        if not hi >= low:  # no bar in the opening minutes: no range this session
            hi = low = np.nan
        ranged = not np.isnan(hi)
        for j in range(formed, end):
            x = c[j]
            top[j] = hi
            bottom[j] = low
            # +1 above, -1 below, 0 inside (hi >= low: never both), as selects, not branches
            code[j] = ((1.0 if x > hi else 0.0) - (1.0 if x < low else 0.0)) if ranged else np.nan
            check += (h[j] + lo[j]) + x
        i = end
    return top, bottom, code, -1 if check - check == 0.0 else _first_non_finite_price(h, lo, c)
