"""MACD trend filter: trade signal-line crosses only in the direction of the MACD's trend."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Self

from pydantic import Field, model_validator

from tradeos_lab.indicators import MACD, Indicator
from tradeos_lab.strategies.base import Decision, FloatArray, Strategy, StrategyParams, Values
from tradeos_lab.strategies.registry import register
from tradeos_lab.strategies.rules import choose, crossings


class MacdTrendParams(StrategyParams):
    fast: int = Field(default=12, ge=1, description="Fast EMA period of the MACD line.")
    slow: int = Field(default=26, ge=2, description="Slow EMA period of the MACD line.")
    signal: int = Field(default=9, ge=1, description="EMA period of the signal line.")
    allow_short: bool = Field(default=True, description="Trade downtrends too.")

    @model_validator(mode="after")
    def _fast_below_slow(self) -> Self:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be shorter than slow ({self.slow})")
        return self


@register
class MacdTrend(Strategy[MacdTrendParams]):
    """Moving Average Convergence/Divergence after Appel (1979, "The Moving Average
    Convergence-Divergence Trading Method"; 12/26/9 by default): the MACD line (fast EMA minus
    slow EMA) above zero is an uptrend, below zero a downtrend. Long when the MACD crosses above
    its signal line in an uptrend, short when it crosses below in a downtrend (flat without
    `allow_short`); a cross against the trend goes flat.

    Strength 1, confidence 1; features: MACD line, signal line, histogram and the close.
    """

    name = "macd_trend"
    params_type = MacdTrendParams
    lookback = 2

    @cached_property
    def macd(self) -> MACD:
        p = self.params
        return MACD(fast=p.fast, slow=p.slow, signal=p.signal)

    def indicators(self) -> Sequence[Indicator]:
        return (self.macd,)

    def rule(self, values: Values) -> Decision | FloatArray:
        line_name, signal_name, _ = self.macd.outputs
        line, signal = values[line_name], values[signal_name]
        up, down = crossings(line, signal)
        uptrend, downtrend = line > 0, line < 0
        long = up & uptrend
        short = down & downtrend
        against = (up & ~uptrend) | (down & ~downtrend)
        if self.params.allow_short:
            return choose(long, short, flat=against)
        return choose(long, flat=against | short)
