"""Backtests run the pipeline's strategy classes through vectorbt, whatever the bars' source."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from hypothesis.extra.numpy import arrays
from sqlalchemy import create_engine

from tradeos_lab.errors import ValidationError
from tradeos_lab.research import BacktestProfile, Stops, backtest, vectorbt_engine
from tradeos_lab.research.backtest import simulate
from tradeos_lab.research.kernels import STATS, fold_value_nb, start_stats_nb, value_stats
from tradeos_lab.research.market import Market, load_bars
from tradeos_lab.research.sweep import sweep
from tradeos_lab.stores.bars_pg import PostgresBarStore
from tradeos_lab.strategies import RsiReversion, SmaCross
from tradeos_lab.strategies.batch import SIGNAL_MASKS

STRATEGY = SmaCross(fast=10, slow=40)


def test_metrics_agree_with_vectorbts_own_accessors(one_symbol: pd.DataFrame) -> None:
    result = backtest(STRATEGY, one_symbol)
    pf = result.portfolio
    assert result.metrics["total_return"] == pytest.approx(_one(pf.total_return()))
    assert result.metrics["max_drawdown"] == pytest.approx(_one(pf.max_drawdown()))
    assert result.metrics["trades"] == _one(pf.trades.count())
    closed = result.trades().query("Status == 'Closed'")
    assert result.metrics["win_rate"] == pytest.approx((closed["PnL"] > 0).mean())
    assert result.metrics["trades"] > 10
    assert 0 < result.metrics["exposure"] <= 1
    assert result.equity.index.tz is not None
    assert result.equity.iloc[-1] == pytest.approx(_one(pf.final_value()))


def _one(value: object) -> float:
    """The single value of a one-column vectorbt result."""
    return float(np.asarray(value).ravel()[0])


def test_signals_are_the_strategys_batch_form(one_symbol: pd.DataFrame) -> None:
    """The orders vectorbt placed sit on bars where the strategy's own batch signals fire."""
    result = backtest(STRATEGY, one_symbol, profile=BacktestProfile(fee_bps=0, slippage_bps=0))
    signals = STRATEGY.signals(one_symbol)
    fired = set(signals.loc[signals["direction"] != 0, "ts"])
    orders = result.portfolio.orders.records_readable
    placed = set(pd.to_datetime(orders["Timestamp"]).dt.tz_localize("UTC"))
    assert placed and placed <= fired


def test_the_engine_that_ran_is_reported() -> None:
    expected = "rust" if importlib.util.find_spec("vectorbt_rust") else "numba"
    assert vectorbt_engine() == expected


@pytest.fixture
def pg_bar_store(pg_url: str) -> Iterator[PostgresBarStore]:
    engine = create_engine(pg_url)
    yield PostgresBarStore(engine)
    engine.dispose()


@pytest.mark.postgres
def test_a_bar_store_and_a_frame_give_the_same_backtest(
    pg_bar_store: PostgresBarStore, two_symbols: pd.DataFrame
) -> None:
    pg_bar_store.write_bars(two_symbols)
    from_frame = backtest(STRATEGY, two_symbols)
    from_store = backtest(STRATEGY, pg_bar_store, symbols=["AAA", "BBB"], timeframe="5m")
    assert from_store.barset.source == "PostgresBarStore"
    assert from_store.barset.data_hash == from_frame.barset.data_hash
    assert from_store.metrics == pytest.approx(from_frame.metrics, nan_ok=True)


def test_several_symbols_trade_as_one_portfolio(two_symbols: pd.DataFrame) -> None:
    profile = BacktestProfile(position_pct=50)
    result = backtest(STRATEGY, two_symbols, profile=profile)
    trades = result.trades()
    assert set(trades["Column"]) == {"AAA", "BBB"}
    assert result.metrics["trades"] == len(trades)
    assert len(result.equity) == two_symbols["ts"].nunique()
    alone = backtest(STRATEGY, two_symbols, symbols="AAA", profile=profile)
    assert alone.metrics["trades"] == (trades["Column"] == "AAA").sum()


def test_stops_cap_the_loss_of_a_trade(one_symbol: pd.DataFrame) -> None:
    free = BacktestProfile(fee_bps=0, slippage_bps=0)
    plain = backtest(STRATEGY, one_symbol, profile=free).trades()
    stopped = backtest(
        STRATEGY, one_symbol, profile=free, stops=Stops(stop_loss=0.002, take_profit=0.004)
    ).trades()
    assert plain["Return"].min() < -0.004
    assert stopped["Return"].min() >= -0.004  # a stop fills at its price or a gap's open
    assert stopped["Return"].max() < plain["Return"].max()


def test_costs_come_off_the_return(one_symbol: pd.DataFrame) -> None:
    free = backtest(STRATEGY, one_symbol, profile=BacktestProfile(fee_bps=0, slippage_bps=0))
    costly = backtest(STRATEGY, one_symbol, profile=BacktestProfile(fee_bps=20, slippage_bps=10))
    assert costly.metrics["total_return"] < free.metrics["total_return"]
    assert costly.metrics["trades"] == free.metrics["trades"]


def test_a_sweeps_combination_equals_its_single_backtest(two_symbols: pd.DataFrame) -> None:
    profile = BacktestProfile(position_pct=50)
    swept = sweep(RsiReversion, two_symbols, profile=profile, period=[7, 14], chunk_cells=5_000)
    single = backtest(RsiReversion(period=14), two_symbols, profile=profile)
    assert swept.table.xs(14, level="period").iloc[0].to_dict() == pytest.approx(
        single.metrics, nan_ok=True
    )


def test_figures_are_built(one_symbol: pd.DataFrame) -> None:
    result = backtest(STRATEGY, one_symbol)
    assert len(result.plot().data) == 2
    assert len(result.plot_trades().data) >= 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda bars: backtest("no_such_strategy", bars), "unknown strategy"),
        (lambda bars: backtest(STRATEGY, bars.drop(columns="close")), "missing columns"),
        (lambda bars: backtest(STRATEGY, bars, symbols="ZZZ"), "no bars of"),
        (lambda bars: backtest(STRATEGY, 42), "bar frame or a bar source"),
        (lambda bars: backtest(STRATEGY, bars, start="2030-01-01"), "no bars"),
        (lambda bars: BacktestProfile(fee_bps=-1), "fee_bps"),
        (lambda bars: BacktestProfile(position_pct=0), "position_pct"),
        (lambda bars: Stops(stop_loss=1.5), "stop_loss"),
        (lambda bars: Stops(trailing=True), "trailing"),
    ],
)
def test_bad_input_is_a_validation_error(
    one_symbol: pd.DataFrame, call: object, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        call(one_symbol)  # type: ignore[operator]


def test_a_bar_source_needs_symbols_and_a_timeframe(
    one_symbol: pd.DataFrame,
) -> None:
    class Source:
        def read_bars(self, symbol, timeframe, start=None, end=None, limit=None):  # type: ignore[no-untyped-def]
            return one_symbol

    with pytest.raises(ValidationError, match="symbols and a timeframe"):
        backtest(STRATEGY, Source())
    result = backtest(STRATEGY, Source(), symbols="AAA", timeframe="5m")
    assert result.barset.source == "Source"
    assert np.isfinite(result.metrics["total_return"])


def test_equity_is_vectorbts_value_per_bar(two_symbols: pd.DataFrame) -> None:
    """The metrics' one-pass replay of the orders gives vectorbt's own value, bar for bar, for
    symbols sharing cash and with stops."""
    result = backtest(
        STRATEGY, two_symbols, profile=BacktestProfile(position_pct=50), stops=Stops(0.01, 0.02)
    )
    expected = np.asarray(result.portfolio.value(), dtype=np.float64).ravel()
    np.testing.assert_allclose(result.equity.to_numpy(), expected, rtol=1e-9)
    drawdown = float((expected / np.maximum.accumulate(expected) - 1).min())
    assert result.metrics["max_drawdown"] == pytest.approx(drawdown)


@pytest.mark.parametrize("position_pct", [100.0, 30.0])
@pytest.mark.parametrize("symbols", [("AAA",), ("AAA", "BBB")])
def test_the_simulation_gives_vectorbts_own_orders(
    two_symbols: pd.DataFrame, symbols: tuple[str, ...], position_pct: float
) -> None:
    """Without stops the signals run through `kernels.signal_orders_nb`, not `from_signals`: the
    order records are `from_signals`' bit for bit, for columns alone and sharing cash, with
    signals that conflict (entries and exits together, reversals, entries while in a position)."""
    import vectorbt as vbt

    market = Market.of(load_bars(two_symbols, symbols=symbols))
    combos = [SmaCross(fast=f, slow=s) for f in (3, 8) for s in (13, 21)]
    n_symbols = len(symbols)
    width = len(combos) * n_symbols
    rng = np.random.default_rng(11)
    masks = {}
    for name in SIGNAL_MASKS:
        own = np.column_stack([market.signals(c)[name] for c in combos])
        masks[name] = own | (rng.random((market.shape[0], width)) < 0.01)
    columns = pd.MultiIndex.from_product(
        [range(len(combos)), symbols], names=["combination", "symbol"]
    )
    shared = "combination" if n_symbols > 1 else None
    profile = BacktestProfile(position_pct=position_pct)
    found = simulate(
        market, masks, columns, profile=profile, stops=Stops(), group_by=shared, curve=True
    )
    index = market.index.tz_convert(None)
    close = pd.DataFrame(np.tile(market.prices["close"], (1, len(combos))), index, columns)
    expected = vbt.Portfolio.from_signals(
        close,
        **{name: pd.DataFrame(masks[name], index, columns) for name in SIGNAL_MASKS},
        **profile.portfolio_arguments(),
        group_by=shared,
        cash_sharing=shared is not None,
    )
    assert found.built is None  # the kernel ran, not from_signals
    assert len(found.orders) > 100 * len(combos)
    assert found.orders.tobytes() == expected.order_records.tobytes()
    value = np.asarray(expected.value())
    np.testing.assert_array_equal(np.asarray(found.portfolio().value()), value)
    assert found.stats is not None  # folded in by the simulation, as it ran
    np.testing.assert_allclose(found.stats["value"], value, rtol=1e-9)
    replayed = value_stats(
        found.close,
        found.col_symbol,
        found.orders,
        found.groups,
        init_cash=profile.init_cash,
        start_row=0,
    )
    for name in STATS:
        np.testing.assert_allclose(found.stats[name], replayed[name], rtol=1e-9)


def test_a_one_symbol_sweep_gives_each_combination_its_own_backtests_metrics(
    one_symbol: pd.DataFrame,
) -> None:
    profile = BacktestProfile(position_pct=50)
    swept = sweep(SmaCross, one_symbol, profile=profile, fast=[3, 5, 8], slow=[13, 21, 34])
    assert len(swept.table) == 9
    for (fast, slow), row in swept.table.iterrows():
        single = backtest(SmaCross(fast=fast, slow=slow), one_symbol, profile=profile)
        np.testing.assert_array_equal(row.to_numpy(np.float64), list(single.metrics.values()))


@settings(max_examples=300, deadline=None)
@given(
    values=arrays(
        np.float64, hst.integers(1, 80), elements=hst.floats(50, 150).map(lambda x: round(x, 1))
    ),
    start_row=hst.integers(0, 5),
)
def test_the_folded_drawdown_is_the_worst_of_every_bars_own_drawdown(
    values: np.ndarray, start_row: int
) -> None:
    acc = start_stats_nb(100.0)
    for i, value in enumerate(values):
        acc = fold_value_nb(acc, i, value, True, start_row)
    counted = np.concatenate([[100.0] if start_row == 0 else [], values[max(start_row - 1, 0) :]])
    peaks = np.maximum.accumulate(counted)
    assert acc[2] == float(np.min(counted / peaks - 1.0, initial=0.0))
