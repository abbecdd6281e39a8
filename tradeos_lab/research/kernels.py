"""The two numba passes of a backtest: a signal simulation and the metrics of its columns.

`signal_orders_nb` is vectorbt's `simulate_from_signals_nb` for what a backtest without stops
asks of it (fill at the close, value at the close, no logs, default call order): vectorbt's
kernel reads some forty flexible arguments per bar and column (~100 ns), whether or not a signal
is there, and wants the close tiled to bars x columns; this one reads four masks on a bar
without a signal and calls vectorbt's own order functions (`signals_to_size_nb`,
`process_order_nb`, ...) where there is one, so the order records are vectorbt's, bit for bit.

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
from vectorbt.portfolio.enums import Direction, ProcessOrderState
from vectorbt.portfolio.nb import (
    order_nb,
    process_order_nb,
    resolve_dir_conflict_nb,
    resolve_opposite_entry_nb,
    resolve_signal_conflict_nb,
    signals_to_size_nb,
)

SELL = 1
"""vectorbt's `OrderSide.Sell` (0 is Buy)."""
CLOSED = 1
"""vectorbt's `TradeStatus.Closed` (0 is Open)."""


STATS = ("final_value", "mean", "std", "downside", "max_drawdown", "exposure")
"""What both kernels give per group, in this order (see `fold_value_nb`)."""


Stats = tuple[float, float, float, float, float, float, float, float]
"""The running sums of `fold_value_nb`: value (the previous bar's, the last one's at the end),
peak, worst drawdown, sum of returns, of squared returns, of squared negative returns, bars
held, and the lowest value since the peak whose drawdown is folded in. A tuple, not an array:
the kernels keep it in registers through the bar loop instead of storing it to memory every
bar."""


@numba.njit(cache=True)
def start_stats_nb(init_cash: float) -> Stats:
    """The running sums of `fold_value_nb` before the first bar."""
    return (init_cash, init_cash, 0.0, 0.0, 0.0, 0.0, 0.0, init_cash)


@numba.njit(cache=True)
def fold_value_nb(acc: Stats, i: int, value: float, holding: bool, start_row: int) -> Stats:
    """`acc` with bar `i`'s value folded in (bars before `start_row` only set the base).

    The drawdown `value / peak - 1` is divided out only for a new low since the peak: rounding
    keeps it non-decreasing in the value, so a value at or above that low cannot deepen the
    worst drawdown (the same minimum as dividing every bar, at one division a bar fewer)."""
    if i < start_row:
        return (value, value, acc[2], acc[3], acc[4], acc[5], acc[6], value)
    previous, peak, worst, total, squares, downside, held, low = acc
    r = value / previous - 1.0
    total += r
    squares += r * r
    if r < 0.0:
        downside += r * r
    if value > peak:  # a new peak: a drawdown of 0
        peak = value
        low = value
    elif not value >= low:  # a new low since the peak (or NaN, which is always divided)
        peak = max(peak, value)
        worst = min(worst, value / peak - 1.0)
        low = value
    if holding:
        held += 1.0
    return (value, peak, worst, total, squares, downside, held, low)


@numba.njit(cache=True)
def finish_stats_nb(acc: Stats, n: int, out: np.ndarray) -> None:
    """`STATS` of `n` folded bars into `out`: the mean, sample std and downside deviation of the
    per-bar returns, the worst drawdown and the share of bars holding a position."""
    mean = acc[3] / n
    out[0] = acc[0]
    out[1] = mean
    out[2] = np.sqrt(max(acc[4] - n * mean * mean, 0.0) / (n - 1)) if n > 1 else np.nan
    out[3] = np.sqrt(acc[5] / n)
    out[4] = acc[2]
    out[5] = acc[6] / n


@numba.njit(cache=True)
def signal_size_nb(  # noqa: PLR0917 - vectorbt's arguments, flat
    position_now: float,
    is_long_entry: bool,
    is_long_exit: bool,
    is_short_entry: bool,
    is_short_exit: bool,
    val_price_now: float,
    size: float,
    size_type: int,
    accumulate: int,
    upon_long_conflict: int,
    upon_short_conflict: int,
    upon_dir_conflict: int,
    upon_opposite_entry: int,
) -> tuple[float, int, int]:
    """The order (size, size type, direction) of a bar's signals, as `simulate_from_signals_nb`
    resolves them: conflicts, opposite entries, then `signals_to_size_nb`."""
    _accumulate = accumulate
    if is_long_entry or is_short_entry:
        is_long_entry, is_long_exit = resolve_signal_conflict_nb(
            position_now,
            is_long_entry,
            is_long_exit,
            Direction.LongOnly,
            upon_long_conflict,
        )
        is_short_entry, is_short_exit = resolve_signal_conflict_nb(
            position_now,
            is_short_entry,
            is_short_exit,
            Direction.ShortOnly,
            upon_short_conflict,
        )
        is_long_entry, is_short_entry = resolve_dir_conflict_nb(
            position_now, is_long_entry, is_short_entry, upon_dir_conflict
        )
        is_long_entry, is_long_exit, is_short_entry, is_short_exit, _accumulate = (
            resolve_opposite_entry_nb(
                position_now,
                is_long_entry,
                is_long_exit,
                is_short_entry,
                is_short_exit,
                upon_opposite_entry,
                _accumulate,
            )
        )
    _size, _size_type, _direction = signals_to_size_nb(
        position_now,
        is_long_entry,
        is_long_exit,
        is_short_entry,
        is_short_exit,
        size,
        size_type,
        _accumulate,
        val_price_now,
    )
    return _size, _size_type, _direction


@numba.njit(cache=True)
def fill_order_nb(  # noqa: PLR0917 - vectorbt's arguments, flat
    i: int,
    col: int,
    group: int,
    _size: float,
    _size_type: int,
    _direction: int,
    price: float,
    state: ProcessOrderState,
    costs: tuple[float, float, float, float, float, float, bool, bool, bool],
    update_value: bool,
    order_records: np.ndarray,
    log_records: np.ndarray,
) -> ProcessOrderState:
    """`process_order_nb` of the order `signal_size_nb` gave, at `price`; `costs` are fees,
    fixed fees, slippage, min size, max size, size granularity, lock cash, allow partial and
    raise reject. Returns the state after it."""
    if _direction == Direction.ShortOnly:
        _size *= -1  # process_order_nb takes a short-only size unsigned
    order = order_nb(
        size=_size,
        price=price,
        size_type=_size_type,
        direction=_direction,
        fees=costs[0],
        fixed_fees=costs[1],
        slippage=costs[2],
        min_size=costs[3],
        max_size=costs[4],
        size_granularity=costs[5],
        reject_prob=0.0,
        lock_cash=costs[6],
        allow_partial=costs[7],
        raise_reject=costs[8],
        log=False,
    )
    _, new_state = process_order_nb(
        i, col, group, state, update_value, order, order_records, log_records
    )
    return new_state


@numba.njit(cache=True)
def signal_orders_nb(  # noqa: PLR0912, PLR0915, PLR0917 - vectorbt's loop, flat
    close: np.ndarray,
    col_symbol: np.ndarray,
    long_entries: np.ndarray,
    long_exits: np.ndarray,
    short_entries: np.ndarray,
    short_exits: np.ndarray,
    group_lens: np.ndarray,
    init_cash: np.ndarray,
    size: float,
    size_type: int,
    fees: float,
    fixed_fees: float,
    slippage: float,
    min_size: float,
    max_size: float,
    size_granularity: float,
    lock_cash: bool,
    allow_partial: bool,
    raise_reject: bool,
    accumulate: int,
    upon_long_conflict: int,
    upon_short_conflict: int,
    upon_dir_conflict: int,
    upon_opposite_entry: int,
    ffill_val_price: bool,
    update_value: bool,
    start_row: int,
    order_records: np.ndarray,
    log_records: np.ndarray,
    stats: np.ndarray,
    curve: np.ndarray,
) -> int:
    """`simulate_from_signals_nb` in long/short signal mode with the order price and the
    valuation price at the close, no stops, no logs and the default call order: the same
    statements in the same order wherever a mask is set, and on a bar without one only the
    valuation price moves. Column c trades symbol `col_symbol[c]` (its close column); the
    columns of a group of `group_lens` share its cash when any group has several. Fills
    `order_records` and returns how many there are; folds each group's value per bar (cash plus
    positions at the close) into its `STATS` row of `stats`, from `start_row`, and writes it
    to `curve` when that is bars x groups (not 0 x 0)."""
    keep_curve = curve.shape[0] > 0
    n_rows = long_entries.shape[0]
    n_cols = long_entries.shape[1]
    cash_sharing = group_lens.max() > 1
    last_position = np.zeros(n_cols)
    last_debt = np.zeros(n_cols)
    last_val_price = np.full(n_cols, np.nan)
    price_arr = np.full(n_cols, np.nan)
    size_arr = np.zeros(n_cols)
    size_type_arr = np.zeros(n_cols, dtype=np.int64)
    direction_arr = np.zeros(n_cols, dtype=np.int64)
    costs = (
        fees,
        fixed_fees,
        slippage,
        min_size,
        max_size,
        size_granularity,
        lock_cash,
        allow_partial,
        raise_reject,
    )
    oidx = 0
    lidx = 0
    from_col = 0
    for group in range(len(group_lens)):
        to_col = from_col + group_lens[group]
        cash_now = init_cash[group]
        free_cash_now = init_cash[group]
        acc = start_stats_nb(init_cash[group])
        if not cash_sharing:
            # One column per group: its state in locals, so a bar without a signal costs a
            # few loads and the metric fold, not the arrays of every column.
            col = from_col
            symbol = col_symbol[col]
            position_now = 0.0
            debt_now = 0.0
            val_price_now = np.nan
            for i in range(n_rows):
                price = close[i, symbol]
                if not np.isnan(price) or not ffill_val_price:
                    val_price_now = price
                is_long_entry = long_entries[i, col]
                is_long_exit = long_exits[i, col]
                is_short_entry = short_entries[i, col]
                is_short_exit = short_exits[i, col]
                if is_long_entry or is_long_exit or is_short_entry or is_short_exit:
                    _size, _size_type, _direction = signal_size_nb(
                        position_now,
                        is_long_entry,
                        is_long_exit,
                        is_short_entry,
                        is_short_exit,
                        val_price_now,
                        size,
                        size_type,
                        accumulate,
                        upon_long_conflict,
                        upon_short_conflict,
                        upon_dir_conflict,
                        upon_opposite_entry,
                    )
                    if _size != 0:
                        value_now = cash_now
                        if position_now != 0:
                            value_now += position_now * val_price_now
                        state = ProcessOrderState(
                            cash=cash_now,
                            position=position_now,
                            debt=debt_now,
                            free_cash=free_cash_now,
                            val_price=val_price_now,
                            value=value_now,
                            oidx=oidx,
                            lidx=lidx,
                        )
                        new_state = fill_order_nb(
                            i,
                            col,
                            group,
                            _size,
                            _size_type,
                            _direction,
                            price,
                            state,
                            costs,
                            update_value,
                            order_records,
                            log_records,
                        )
                        cash_now = new_state.cash
                        free_cash_now = new_state.free_cash
                        oidx = new_state.oidx
                        lidx = new_state.lidx
                        position_now = new_state.position
                        debt_now = new_state.debt
                        if not np.isnan(new_state.val_price) or not ffill_val_price:
                            val_price_now = new_state.val_price
                value = cash_now
                holding = position_now != 0.0
                if holding:
                    value += position_now * price
                if keep_curve:
                    curve[i, group] = value
                acc = fold_value_nb(acc, i, value, holding, start_row)
            finish_stats_nb(acc, n_rows - start_row, stats[group])
            from_col = to_col
            continue
        for i in range(n_rows):
            any_order = False
            for col in range(from_col, to_col):
                price = close[i, col_symbol[col]]
                if not np.isnan(price) or not ffill_val_price:
                    last_val_price[col] = price
                is_long_entry = long_entries[i, col]
                is_long_exit = long_exits[i, col]
                is_short_entry = short_entries[i, col]
                is_short_exit = short_exits[i, col]
                if not (is_long_entry or is_long_exit or is_short_entry or is_short_exit):
                    continue  # signals_to_size_nb gives no order without a signal
                price_arr[col] = price
                _size, _size_type, _direction = signal_size_nb(
                    last_position[col],
                    is_long_entry,
                    is_long_exit,
                    is_short_entry,
                    is_short_exit,
                    last_val_price[col],
                    size,
                    size_type,
                    accumulate,
                    upon_long_conflict,
                    upon_short_conflict,
                    upon_dir_conflict,
                    upon_opposite_entry,
                )
                size_arr[col] = _size
                size_type_arr[col] = _size_type
                direction_arr[col] = _direction
                if _size != 0:
                    any_order = True
            if any_order:
                value_now = cash_now
                if cash_sharing:
                    for col in range(from_col, to_col):
                        if last_position[col] != 0:
                            value_now += last_position[col] * last_val_price[col]
                for col in range(from_col, to_col):
                    position_now = last_position[col]
                    debt_now = last_debt[col]
                    val_price_now = last_val_price[col]
                    if not cash_sharing:
                        value_now = cash_now
                        if position_now != 0:
                            value_now += position_now * val_price_now
                    _size = size_arr[col]
                    if _size == 0:
                        continue
                    size_arr[col] = 0.0  # no order on a later bar without a signal
                    state = ProcessOrderState(
                        cash=cash_now,
                        position=position_now,
                        debt=debt_now,
                        free_cash=free_cash_now,
                        val_price=val_price_now,
                        value=value_now,
                        oidx=oidx,
                        lidx=lidx,
                    )
                    new_state = fill_order_nb(
                        i,
                        col,
                        group,
                        _size,
                        size_type_arr[col],
                        direction_arr[col],
                        price_arr[col],
                        state,
                        costs,
                        update_value,
                        order_records,
                        log_records,
                    )
                    cash_now = new_state.cash
                    free_cash_now = new_state.free_cash
                    value_now = new_state.value
                    oidx = new_state.oidx
                    lidx = new_state.lidx
                    last_position[col] = new_state.position
                    last_debt[col] = new_state.debt
                    if not np.isnan(new_state.val_price) or not ffill_val_price:
                        last_val_price[col] = new_state.val_price
            value = cash_now
            holding = False
            for col in range(from_col, to_col):
                if last_position[col] != 0.0:
                    holding = True
                    value += last_position[col] * close[i, col_symbol[col]]
            if keep_curve:
                curve[i, group] = value
            acc = fold_value_nb(acc, i, value, holding, start_row)
        finish_stats_nb(acc, n_rows - start_row, stats[group])
        from_col = to_col
    return oidx


@numba.njit(cache=True)
def trade_counts_nb(  # noqa: PLR0917 - the trade fields passed positionally
    col: np.ndarray,
    entry_idx: np.ndarray,
    status: np.ndarray,
    pnl: np.ndarray,
    groups: np.ndarray,
    start_row: int,
    n_groups: int,
) -> np.ndarray:
    """Per group: trades entered from `start_row`, how many of them are closed, and how many of
    those won (P&L above 0). One pass over vectorbt's trade record fields: a sweep's chunk has
    hundreds of thousands of trades, and masks and counts per field read each several times."""
    out = np.zeros((n_groups, 3), dtype=np.int64)
    for k in range(col.shape[0]):
        if entry_idx[k] < start_row:
            continue
        g = groups[col[k]]
        out[g, 0] += 1
        if status[k] == CLOSED:
            out[g, 1] += 1
            if pnl[k] > 0:
                out[g, 2] += 1
    return out


@numba.njit(cache=True)
def value_stats_nb(  # noqa: PLR0917 - arrays passed positionally
    close: np.ndarray,
    col_symbol: np.ndarray,
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
    Column c holds symbol `col_symbol[c]` (its column of `close`).

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
        acc = start_stats_nb(init_cash)
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
                    value += pos[k] * close[i, col_symbol[cols[k]]]
            if keep_curve:
                curve[i, g] = value
            acc = fold_value_nb(acc, i, value, holding, start_row)
        finish_stats_nb(acc, n_rows - start_row, out[g])
    return out


def value_stats(
    close: np.ndarray,
    col_symbol: np.ndarray,
    orders: np.ndarray,
    groups: np.ndarray,
    *,
    init_cash: float,
    start_row: int,
    curve: bool = False,
) -> dict[str, np.ndarray]:
    """`value_stats_nb` over vectorbt order records; `groups[c]` is column c's group and
    `col_symbol[c]` its column of `close`. With `curve`, "value" is the value per bar and group."""
    n_cols = len(col_symbol)
    # vectorbt writes the orders of a group bar by bar, so each column's are in bar order: a
    # stable sort by column (none when the columns are not interleaved) orders them by column.
    columns = orders["col"]
    if len(columns) > 1 and (np.diff(columns) < 0).any():
        sorted_orders = orders[np.argsort(columns, kind="stable")]
    else:
        sorted_orders = orders
    col_start = np.searchsorted(sorted_orders["col"], np.arange(n_cols + 1)).astype(np.int64)
    group_cols = np.argsort(groups, kind="stable").astype(np.int64)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    group_start = np.searchsorted(groups[group_cols], np.arange(n_groups + 1)).astype(np.int64)
    values = np.empty((close.shape[0], n_groups) if curve else (0, 0))
    stats: Any = value_stats_nb(
        np.ascontiguousarray(close, dtype=np.float64),
        col_symbol.astype(np.int64),
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
    out = {name: stats[:, k] for k, name in enumerate(STATS)}
    if curve:
        out["value"] = values
    return out
