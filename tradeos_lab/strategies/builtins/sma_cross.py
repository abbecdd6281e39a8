"""SMA-cross momentum: follow the trend when a fast moving average crosses a slow one."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Self

from pydantic import Field, model_validator

from tradeos_lab.indicators import SMA, Indicator
from tradeos_lab.strategies.base import Decision, FloatArray, Strategy, StrategyParams, Values
from tradeos_lab.strategies.registry import register
from tradeos_lab.strategies.rules import choose, crossings


class SmaCrossParams(StrategyParams):
    fast: int = Field(default=10, ge=1, description="Bars in the fast simple moving average.")
    slow: int = Field(default=50, ge=2, description="Bars in the slow simple moving average.")
    allow_short: bool = Field(
        default=True, description="Go short on a downward cross; otherwise go flat."
    )

    @model_validator(mode="after")
    def _fast_below_slow(self) -> Self:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be shorter than slow ({self.slow})")
        return self


@register
class SmaCross(Strategy[SmaCrossParams]):
    """Moving-average crossover (the "variable-length moving average" rule tested by Brock,
    Lakonishok and LeBaron, 1992, J. Finance 47(5)): long when the `fast`-bar SMA of the close
    crosses above the `slow`-bar SMA, short (or flat without `allow_short`) when it crosses below.

    Strength is 1 on a cross, confidence 1; the features are both averages and the close.
    """

    name = "sma_cross"
    params_type = SmaCrossParams
    lookback = 2

    @cached_property
    def fast(self) -> SMA:
        return SMA(self.params.fast)

    @cached_property
    def slow(self) -> SMA:
        return SMA(self.params.slow)

    def indicators(self) -> Sequence[Indicator]:
        return (self.fast, self.slow)

    def rule(self, values: Values) -> Decision | FloatArray:
        fast, slow = values[self.fast.name], values[self.slow.name]
        up, down = crossings(fast, slow)
        if self.params.allow_short:
            return choose(long=up, short=down)
        return choose(long=up, flat=down)
