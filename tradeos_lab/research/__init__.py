"""Research: backtests of the pipeline's own strategies on vectorbt, parameter sweeps,
walk-forward validation and the run records behind them.

    from tradeos_lab.research import backtest, sweep, walk_forward
    result = backtest(SmaCross(fast=10, slow=50), bars)     # bars: a frame or a bar store
    result.metrics, result.equity, result.plot()
    table = sweep(SmaCross, bars, fast=range(5, 50), slow=range(20, 200, 5))
    lab.research.backtest(...)   # the same, kept in the records: lab.research.runs()
"""

from tradeos_lab.bars import BarSource
from tradeos_lab.research.backtest import (
    METRICS,
    BacktestProfile,
    BacktestResult,
    Stops,
    backtest,
    vectorbt_engine,
)
from tradeos_lab.research.market import BarSet, load_bars
from tradeos_lab.research.runs import RunRecord

__all__ = [
    "METRICS",
    "BacktestProfile",
    "BacktestResult",
    "BarSet",
    "BarSource",
    "RunRecord",
    "Stops",
    "backtest",
    "load_bars",
    "vectorbt_engine",
]
