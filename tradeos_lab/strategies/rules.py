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
    b_now = np.broadcast_to(np.asarray(b, dtype=np.float64), a.shape)
    return np.asarray((a > b_now) & (previous(a) <= previous(b_now)))


def crossed_below(a: FloatArray, b: FloatArray | float) -> BoolArray:
    """`a` is below `b` now and was at or above it one bar ago (reads 2 rows)."""
    b_now = np.broadcast_to(np.asarray(b, dtype=np.float64), a.shape)
    return np.asarray((a < b_now) & (previous(a) >= previous(b_now)))


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
    shape = long.shape
    short_mask = np.zeros(shape, dtype=bool) if short is None else short
    flat_mask = np.zeros(shape, dtype=bool) if flat is None else flat
    conflict = long & short_mask
    out = np.full(shape, np.nan)
    out[flat_mask & ~conflict] = 0.0
    up = np.broadcast_to(np.asarray(long_strength, dtype=np.float64), shape)
    down = np.broadcast_to(np.asarray(short_strength, dtype=np.float64), shape)
    go_long, go_short = long & ~conflict, short_mask & ~conflict
    out[go_long] = up[go_long]
    out[go_short] = -down[go_short]
    return out
