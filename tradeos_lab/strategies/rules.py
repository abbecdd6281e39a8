"""Building blocks for rules: numpy expressions that read the same on whole arrays and windows.

Each helper looks back only through `previous`, which shifts by whole rows and fills with NaN, so
on a live window of `lookback` rows its last element equals the batch value at that bar. Every
comparison with NaN is False: no signal fires during an indicator's warm-up.

A crossing and `choose` are one numba pass each: a sweep evaluates them per parameter set over
the whole history, and as numpy expressions they took several passes and temporaries apiece
(most of a sweep's signal time).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from numba.core import types
from numba.extending import overload

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
    return crossings(a, b)[0]


def crossed_below(a: FloatArray, b: FloatArray | float) -> BoolArray:
    """`a` is below `b` now and was at or above it one bar ago (reads 2 rows)."""
    return crossings(a, b)[1]


def crossings(a: FloatArray, b: FloatArray | float) -> tuple[BoolArray, BoolArray]:
    """`crossed_above(a, b)` and `crossed_below(a, b)` from one pass over `a` and `b` (an array
    or a fixed level); False on the first row, which has no row before it (what comparing with
    `previous`'s NaN gives). A rule that reads both asks for both at once."""
    a, b = np.asarray(a), np.asarray(b)
    shape = np.broadcast_shapes(a.shape, b.shape)
    above, below = np.empty(shape, dtype=np.bool_), np.empty(shape, dtype=np.bool_)
    if above.ndim == 0 or len(above) < 2:  # no row has a row before it
        above.fill(False)
        below.fill(False)
        return above, below
    rows = len(above)
    _crossings_nb(
        _rows(a, shape), _rows(b, shape), above.reshape(rows, -1), below.reshape(rows, -1)
    )
    return above, below


def _rows(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | float:
    """`x` as rows x the rest of `shape`, or as the one number it is."""
    if x.ndim == 0:
        return float(x)
    if x.shape != shape:
        x = np.broadcast_to(x, shape)
    return x.reshape(shape[0], -1)


def _at(x: Any, i: int, j: int = 0) -> Any:
    """Element (i, j) of an array, or the number itself (in numba kernels, by type)."""
    if not isinstance(x, np.ndarray):
        return x
    return x[i, j] if x.ndim == 2 else x[i]


# Unannotated: numba requires its signature to equal the implementations' (lambdas) exactly.
@overload(_at)
def _at_nb(x, i, j=0):  # type: ignore[no-untyped-def]
    if isinstance(x, types.Array) and x.ndim == 2:
        return lambda x, i, j=0: x[i, j]
    if isinstance(x, types.Array):
        return lambda x, i, j=0: x[i]
    return lambda x, i, j=0: x


@numba.njit(cache=True)
def _crossings_nb(a: Any, b: Any, above: np.ndarray, below: np.ndarray) -> None:
    for j in range(above.shape[1]):
        above[0, j] = below[0, j] = False
        for i in range(1, above.shape[0]):
            now_a, now_b = _at(a, i, j), _at(b, i, j)
            before_a, before_b = _at(a, i - 1, j), _at(b, i - 1, j)
            above[i, j] = (now_a > now_b) & (before_a <= before_b)
            below[i, j] = (now_a < now_b) & (before_a >= before_b)


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
    shape = np.shape(long)
    out = np.empty(shape)
    _choose_nb(
        _flat(long, shape, np.bool_),
        _flat(short, shape, np.bool_),
        _flat(flat, shape, np.bool_),
        _flat(long_strength, shape, np.float64),
        _flat(short_strength, shape, np.float64),
        out.reshape(-1),
    )
    return out


def _flat(x: object, shape: tuple[int, ...], dtype: type) -> Any:
    """`x` over `shape` as one row, or as the one value it is (None is False)."""
    array: np.ndarray = np.asarray(False if x is None else x, dtype=dtype)
    if array.ndim == 0:
        return array.item()
    if array.shape != shape:
        array = np.broadcast_to(array, shape)
    return array.reshape(-1)


@numba.njit(cache=True)
def _choose_nb(  # noqa: PLR0917 - the masks and strengths, flat
    long: Any, short: Any, flat: Any, long_strength: Any, short_strength: Any, out: np.ndarray
) -> None:
    for i in range(out.shape[0]):
        is_long, is_short = _at(long, i), _at(short, i)
        if is_long:
            out[i] = np.nan if is_short else _at(long_strength, i)
        elif is_short:
            out[i] = -_at(short_strength, i)
        elif _at(flat, i):
            out[i] = 0.0
        else:
            out[i] = np.nan
