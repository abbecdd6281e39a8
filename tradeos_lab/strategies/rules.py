"""Building blocks for rules: numpy expressions that read the same on whole arrays and windows.

Each helper looks back only through `previous`, which shifts by whole rows and fills with NaN, so
on a live window of `lookback` rows its last element equals the batch value at that bar. Every
comparison with NaN is False: no signal fires during an indicator's warm-up.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tradeos_lab.strategies.base import FloatArray

BoolArray = npt.NDArray[np.bool_]


def previous(x: FloatArray, n: int = 1) -> FloatArray:
    """`x` shifted `n` rows later (the value `n` bars ago), NaN where there is none."""
    out = np.full(x.shape, np.nan)
    if n < len(x):
        out[n:] = x[: len(x) - n]
    return out


def crossed_above(a: FloatArray, b: FloatArray | float) -> BoolArray:
    """`a` is above `b` now and was at or below it one bar ago (reads 2 rows)."""
    return _crossed(a, b, np.greater, np.less_equal)


def crossed_below(a: FloatArray, b: FloatArray | float) -> BoolArray:
    """`a` is below `b` now and was at or above it one bar ago (reads 2 rows)."""
    return _crossed(a, b, np.less, np.greater_equal)


def _crossed(a: FloatArray, b: FloatArray | float, now: np.ufunc, before: np.ufunc) -> BoolArray:
    """`now(a, b)` on a row and `before(a, b)` on the row before it; False on the first row,
    which has none (what comparing with `previous`'s NaN gives, without shifting copies: a
    sweep evaluates a crossing per parameter set over the whole history)."""
    out = np.zeros(np.broadcast_shapes(np.shape(a), np.shape(b)), dtype=np.bool_)
    if len(out) > 1:
        b_now, b_before = (b[1:], b[:-1]) if isinstance(b, np.ndarray) and b.ndim else (b, b)
        now(a[1:], b_now, out=out[1:])
        out[1:] &= before(a[:-1], b_before)
    return out


def choose(
    long: BoolArray,
    short: BoolArray | None = None,
    flat: BoolArray | None = None,
    *,
    long_strength: FloatArray | float = 1.0,
    short_strength: FloatArray | float = 1.0,
) -> FloatArray:
    """Strength per bar from masks: long -> +long_strength, short -> -short_strength, flat -> 0,
    otherwise NaN (no signal). Long and short win over flat; a bar both long and short is none."""
    out = np.full(long.shape, np.nan) if flat is None else np.where(flat, 0.0, np.nan)
    # In place: a sweep chooses over the whole history once per parameter set.
    np.copyto(out, long_strength, where=long)
    if short is None:
        return out
    np.copyto(out, np.negative(short_strength), where=short)
    np.copyto(out, np.nan, where=long & short)
    return out
