"""The batch form's arrays build vectorbt portfolios: one symbol, many symbols, a grid.

vectorbt compiles `from_signals` for each array layout it meets (about 13 s each here, in every
process): a one-column frame is one layout, every multi-column frame another, so this module
compiles twice and no more.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt

from tradeos_lab.errors import ValidationError
from tradeos_lab.strategies import MacdTrend, RsiReversion, SmaCross, sweep


def portfolio(
    close: pd.DataFrame | pd.Series, **signals: pd.DataFrame | pd.Series
) -> vbt.Portfolio:
    return vbt.Portfolio.from_signals(close, init_cash=10_000.0, freq="5min", **signals)


def test_one_symbol_signals_build_a_portfolio_that_trades_on_them(
    sample_bars: pd.DataFrame,
) -> None:
    signals = SmaCross(fast=5, slow=20).signals(sample_bars).set_index("ts")
    pf = portfolio(
        signals[["close"]],
        entries=signals[["entries"]],
        exits=signals[["exits"]],
        short_entries=signals[["short_entries"]],
        short_exits=signals[["short_exits"]],
    )
    orders = pf.orders.records_readable
    assert len(orders) >= 2
    # Every order sits on a bar with a signal, and goes the signal's way.
    at = signals.loc[orders["Timestamp"]]
    assert (at["direction"] != 0).all()
    buys = (orders["Side"] == "Buy").to_numpy()
    assert ((at["direction"] > 0).to_numpy() == buys).all()
    # The position follows the last signal: long after a long entry, short after a short one.
    position = pf.assets().to_numpy()[:, 0]
    last = signals["direction"].replace(0, np.nan).ffill().fillna(0).to_numpy()
    assert (np.sign(position) == last).all()


def test_many_symbols_give_wide_frames_vectorbt_accepts(two_symbols: pd.DataFrame) -> None:
    frames = RsiReversion().batch(two_symbols)
    assert list(frames.entries.columns) == ["AAA", "BBB"]
    for frame in (frames.exits, frames.short_entries, frames.short_exits, frames.strength):
        assert frame.index.equals(frames.close.index)
        assert frame.columns.equals(frames.close.columns)
    # A symbol's missing bar has no signal there.
    missing = (
        two_symbols.pivot(index="ts", columns="symbol", values="close")
        .reindex(frames.close.index)
        .isna()
    )
    assert missing.to_numpy().any()
    assert not frames.entries.to_numpy()[missing.to_numpy()].any()
    pf = portfolio(**frames.portfolio_arguments())
    assert pf.wrapper.columns.equals(frames.close.columns)
    assert (pf.orders.count() > 0).all()
    # Each symbol's column equals that symbol evaluated alone.
    alone = RsiReversion().signals(two_symbols[two_symbols.symbol == "BBB"]).set_index("ts")
    pd.testing.assert_series_equal(
        frames.entries["BBB"].loc[alone.index], alone["entries"], check_names=False
    )


def test_a_parameter_grid_builds_one_portfolio_column_per_combination(
    two_symbols: pd.DataFrame,
) -> None:
    frames = sweep(SmaCross, two_symbols, fast=[5, 10, 20], slow=[20, 40])
    # (20, 20) is rejected by the parameters and left out.
    combos = {(f, s) for f, s, _ in frames.entries.columns}
    assert combos == {(5, 20), (5, 40), (10, 20), (10, 40), (20, 40)}
    assert frames.entries.columns.names == ["fast", "slow", "symbol"]
    pf = portfolio(**frames.portfolio_arguments())
    orders = pf.orders.count()
    assert orders.index.equals(frames.entries.columns)
    assert orders.index.names == ["fast", "slow", "symbol"]
    assert (orders > 0).all()
    one = SmaCross(fast=10, slow=40).batch(two_symbols)
    pd.testing.assert_frame_equal(
        frames.entries[(10, 40)], one.entries, check_names=False, check_column_type=False
    )


def test_a_grid_with_no_valid_combination_is_refused(two_symbols: pd.DataFrame) -> None:
    with pytest.raises(ValidationError, match="no combination"):
        sweep(MacdTrend, two_symbols, fast=[30], slow=[20])
