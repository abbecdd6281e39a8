"""The metrics of many portfolio columns in one pass over vectorbt's order records.

vectorbt's `value()` builds cash flows, cash, assets, asset values and values as bars x columns
matrices: in a 1,000-combination sweep over 100k bars that is several 800 MB passes, more than
the simulation itself. Replaying each column's orders bar by bar gives the same value per bar
(cash plus position times close) and folds it straight into the running sums the metrics need, so
nothing of size bars x columns is kept.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

SELL = 1
"""vectorbt's `OrderSide.Sell` (0 is Buy)."""


@numba.njit(cache=True)
def value_stats_nb(  # noqa: PLR0912, PLR0915, PLR0917 - one loop, arrays passed positionally
    close: np.ndarray,
    order_col: np.ndarray,
    order_idx: np.ndarray,
    order_size: np.ndarray,
    order_price: np.ndarray,
    order_fees: np.ndarray,
    order_side: np.ndarray,
    col_start: np.ndarray,
    group_cols: np.ndarray,
    group_start: np.ndarray,
    init_cash: float,
    start_row: int,
    curve: np.ndarray,
) -> np.ndarray:
    """Per group (its columns share cash): final value, mean, sample std and downside deviation
    of the per-bar returns, max drawdown, share of bars holding a position; from `start_row`.
    With a `curve` of bars x groups (not 0 x 0), the value per bar is written there too.

    Orders are sorted by column, then bar; `col_start[c]:col_start[c + 1]` are column c's.
    """
    keep_curve = curve.shape[0] > 0
    n_rows = close.shape[0]
    n_groups = group_start.shape[0] - 1
    out = np.full((n_groups, 6), np.nan)
    for g in range(n_groups):
        cols = group_cols[group_start[g] : group_start[g + 1]]
        ptr = col_start[cols].copy()
        pos = np.zeros(cols.shape[0])
        cash = init_cash
        prev = init_cash
        peak = init_cash
        worst = 0.0
        total = 0.0
        squares = 0.0
        downside = 0.0
        held = 0
        value = init_cash
        for i in range(n_rows):
            holding = False
            value = cash
            for k in range(cols.shape[0]):
                c = cols[k]
                end = col_start[c + 1]
                while ptr[k] < end and order_idx[ptr[k]] == i:
                    j = ptr[k]
                    notional = order_size[j] * order_price[j]
                    if order_side[j] == SELL:
                        cash += notional - order_fees[j]
                        pos[k] -= order_size[j]
                    else:
                        cash -= notional + order_fees[j]
                        pos[k] += order_size[j]
                    value = cash
                    ptr[k] += 1
            for k in range(cols.shape[0]):
                if pos[k] != 0.0:
                    holding = True
                    value += pos[k] * close[i, cols[k]]
            if keep_curve:
                curve[i, g] = value
            if i < start_row:
                prev = value
                peak = value
                continue
            r = value / prev - 1.0
            total += r
            squares += r * r
            if r < 0.0:
                downside += r * r
            peak = max(peak, value)
            drawdown = value / peak - 1.0
            worst = min(worst, drawdown)
            if holding:
                held += 1
            prev = value
        n = n_rows - start_row
        mean = total / n
        out[g, 0] = value
        out[g, 1] = mean
        if n > 1:
            out[g, 2] = np.sqrt(max(squares - n * mean * mean, 0.0) / (n - 1))
        out[g, 3] = np.sqrt(downside / n)
        out[g, 4] = worst
        out[g, 5] = held / n
    return out


def value_stats(
    close: np.ndarray,
    orders: np.ndarray,
    groups: np.ndarray,
    init_cash: float,
    start_row: int,
    *,
    curve: bool = False,
) -> dict[str, np.ndarray]:
    """`value_stats_nb` over vectorbt order records; `groups[c]` is column c's group. With
    `curve`, "value" is the value per bar and group."""
    n_cols = close.shape[1]
    order = np.lexsort((orders["idx"], orders["col"]))
    sorted_orders = orders[order]
    col_start = np.searchsorted(sorted_orders["col"], np.arange(n_cols + 1)).astype(np.int64)
    group_cols = np.argsort(groups, kind="stable").astype(np.int64)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    group_start = np.searchsorted(groups[group_cols], np.arange(n_groups + 1)).astype(np.int64)
    values = np.empty((close.shape[0], n_groups) if curve else (0, 0))
    stats: Any = value_stats_nb(
        np.ascontiguousarray(close, dtype=np.float64),
        sorted_orders["col"].astype(np.int64),
        sorted_orders["idx"].astype(np.int64),
        sorted_orders["size"].astype(np.float64),
        sorted_orders["price"].astype(np.float64),
        sorted_orders["fees"].astype(np.float64),
        sorted_orders["side"].astype(np.int64),
        col_start,
        group_cols,
        group_start,
        float(init_cash),
        int(start_row),
        values,
    )
    names = ("final_value", "mean", "std", "downside", "max_drawdown", "exposure")
    out = {name: stats[:, k] for k, name in enumerate(names)}
    if curve:
        out["value"] = values
    return out
