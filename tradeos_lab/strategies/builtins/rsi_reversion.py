"""RSI mean reversion: buy oversold, sell overbought, leave at the midline."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Self

import numpy as np
from pydantic import Field, model_validator

from tradeos_lab.indicators import RSI, Indicator
from tradeos_lab.strategies.base import Decision, FloatArray, Strategy, StrategyParams, Values
from tradeos_lab.strategies.registry import register
from tradeos_lab.strategies.rules import choose, crossed_above, crossed_below


class RsiReversionParams(StrategyParams):
    period: int = Field(default=14, ge=2, description="RSI period (Wilder's smoothing).")
    oversold: float = Field(default=30.0, gt=0, lt=100, description="Go long below this RSI.")
    overbought: float = Field(default=70.0, gt=0, lt=100, description="Go short above this RSI.")
    exit_level: float = Field(
        default=50.0, gt=0, lt=100, description="Go flat when the RSI crosses back over this."
    )
    allow_short: bool = Field(default=True, description="Trade the overbought side too.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.oversold < self.exit_level < self.overbought:
            raise ValueError(
                f"need oversold ({self.oversold}) < exit_level ({self.exit_level}) < "
                f"overbought ({self.overbought})"
            )
        return self


@register
class RsiReversion(Strategy[RsiReversionParams]):
    """Relative Strength Index reversion after Wilder (1978, "New Concepts in Technical Trading
    Systems"): an RSI below 30 reads oversold, above 70 overbought. Long when the RSI crosses
    below `oversold`, short when it crosses above `overbought` (unless `allow_short` is off),
    flat when it crosses `exit_level` (50) in either direction.

    Strength grows with how far the RSI is from 50: (50 - RSI) / 50 on an entry, so RSI 25 gives
    +0.5 and RSI 80 gives -0.6; confidence 1. Features: the RSI and the close.
    """

    name = "rsi_reversion"
    params_type = RsiReversionParams
    lookback = 2

    @cached_property
    def rsi(self) -> RSI:
        return RSI(self.params.period)

    def indicators(self) -> Sequence[Indicator]:
        return (self.rsi,)

    def rule(self, values: Values) -> Decision | FloatArray:
        p = self.params
        rsi = values[self.rsi.name]
        distance = np.abs(50.0 - rsi) / 50.0
        long = crossed_below(rsi, p.oversold)
        short = crossed_above(rsi, p.overbought) if p.allow_short else np.zeros_like(long)
        flat = crossed_above(rsi, p.exit_level) | crossed_below(rsi, p.exit_level)
        return choose(long, short, flat, long_strength=distance, short_strength=distance)
