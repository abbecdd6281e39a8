"""Strategies: one rule per strategy, evaluated in batch for vectorbt and bar by bar live.

    from tradeos_lab.strategies import SmaCross, get_strategy, register

    strategy = SmaCross(fast=10, slow=50)
    strategy.signals(bars)                 # one symbol: per-bar strength, direction, entries...
    frames = strategy.batch(bars)          # many symbols: wide frames for vectorbt
    frames = sweep(SmaCross, bars, fast=[5, 10], slow=[20, 50])  # a parameter grid
    live = strategy.live("AAPL", "1m")     # one bar in, a RawSignal or None out
    get_strategy("rsi_reversion"), get_strategy("my_pkg.mod:MyStrategy")

A notebook's own strategy subclasses `Strategy`, sets `name`, `params_type` and `lookback`,
writes `indicators()` and `rule(values)`, and calls `register(MyStrategy)`.
"""

from __future__ import annotations

from tradeos_lab.strategies.base import (
    BAR_FIELDS,
    Decision,
    FloatArray,
    Strategy,
    StrategyParams,
    Values,
)
from tradeos_lab.strategies.batch import SIGNAL_COLUMNS, SignalFrames, sweep
from tradeos_lab.strategies.builtins import (
    BUILTINS,
    MacdTrend,
    MacdTrendParams,
    OpeningRangeBreakout,
    OpeningRangeBreakoutParams,
    RsiReversion,
    RsiReversionParams,
    SmaCross,
    SmaCrossParams,
)
from tradeos_lab.strategies.live import LiveStrategy
from tradeos_lab.strategies.registry import (
    get_strategy,
    register,
    strategy_names,
    unregister,
    validate_strategy_name,
)
from tradeos_lab.strategies.rules import (
    choose,
    crossed_above,
    crossed_below,
    crossings,
    previous,
)

__all__ = [
    "BAR_FIELDS",
    "BUILTINS",
    "SIGNAL_COLUMNS",
    "Decision",
    "FloatArray",
    "LiveStrategy",
    "MacdTrend",
    "MacdTrendParams",
    "OpeningRangeBreakout",
    "OpeningRangeBreakoutParams",
    "RsiReversion",
    "RsiReversionParams",
    "SignalFrames",
    "SmaCross",
    "SmaCrossParams",
    "Strategy",
    "StrategyParams",
    "Values",
    "choose",
    "crossed_above",
    "crossed_below",
    "crossings",
    "get_strategy",
    "previous",
    "register",
    "strategy_names",
    "sweep",
    "unregister",
    "validate_strategy_name",
]
