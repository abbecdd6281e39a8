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
    return np.asarray((a > b) & (previous(a) <= _previous(b)))


def crossed_below(a: FloatArray, b: FloatArray | float) -> BoolArray:
    """`a` is below `b` now and was at or above it one bar ago (reads 2 rows)."""
    return np.asarray((a < b) & (previous(a) >= _previous(b)))


def _previous(b: FloatArray | float) -> FloatArray | float:
    """A level (a number) is the same one bar ago; an array is shifted."""
    return previous(b) if isinstance(b, np.ndarray) else b


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
    if short is None:
        return np.where(long, long_strength, out)
    out = np.where(long, long_strength, out)
    out = np.where(short, np.negative(short_strength), out)
    return np.where(long & short, np.nan, out)
