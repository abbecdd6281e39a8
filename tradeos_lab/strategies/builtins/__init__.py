"""The built-in strategies, registered under their names when this package is imported."""

from __future__ import annotations

from tradeos_lab.strategies.builtins.macd_trend import MacdTrend, MacdTrendParams
from tradeos_lab.strategies.builtins.news_sentiment import NewsSentiment, NewsSentimentParams
from tradeos_lab.strategies.builtins.opening_range_breakout import (
    OpeningRangeBreakout,
    OpeningRangeBreakoutParams,
)
from tradeos_lab.strategies.builtins.rsi_reversion import RsiReversion, RsiReversionParams
from tradeos_lab.strategies.builtins.sma_cross import SmaCross, SmaCrossParams

BUILTINS = (SmaCross, RsiReversion, OpeningRangeBreakout, MacdTrend, NewsSentiment)

__all__ = [
    "BUILTINS",
    "MacdTrend",
    "MacdTrendParams",
    "NewsSentiment",
    "NewsSentimentParams",
    "OpeningRangeBreakout",
    "OpeningRangeBreakoutParams",
    "RsiReversion",
    "RsiReversionParams",
    "SmaCross",
    "SmaCrossParams",
]
