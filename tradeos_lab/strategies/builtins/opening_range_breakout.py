"""Opening-range breakout: trade the first break of the session's opening range."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
from pydantic import Field, field_validator

from tradeos_lab.errors import ValidationError
from tradeos_lab.indicators import Indicator, OpeningRange, check_calendar
from tradeos_lab.strategies.base import Decision, FloatArray, Strategy, StrategyParams, Values
from tradeos_lab.strategies.registry import register
from tradeos_lab.strategies.rules import choose, previous


class OpeningRangeBreakoutParams(StrategyParams):
    minutes: int = Field(
        default=30, ge=1, le=390, description="Length of the opening range from the session open."
    )
    calendar: str = Field(
        default="XNYS",
        min_length=1,
        description="Session calendar: an exchange_calendars code (XNYS) or 24/7 for crypto.",
    )
    allow_short: bool = Field(default=True, description="Trade breaks below the range too.")

    @field_validator("calendar")
    @classmethod
    def _known_calendar(cls, calendar: str) -> str:
        try:
            return check_calendar(calendar)
        except ValidationError as e:  # reported as this field's error
            raise ValueError(str(e)) from None


@register
class OpeningRangeBreakout(Strategy[OpeningRangeBreakoutParams]):
    """Opening-range breakout after Crabel (1990, "Day Trading with Short Term Price Patterns
    and Opening Range Breakout"): the high and low of the first `minutes` of each session on
    `calendar` form the range; long when the close breaks above it, short (or nothing without
    `allow_short`) when it breaks below.

    Read from the breakout code of the opening-range indicator (+1 above, -1 below, 0 inside,
    NaN while the range forms and outside sessions): a signal fires when the code changes to
    +1 or -1; flat when it falls back inside the range (a failed breakout) or when the session's
    values end (the first bar after the session, e.g. the next session's open). Strength 1,
    confidence 1; features: range high, range low, breakout code and the close.
    """

    name = "opening_range_breakout"
    params_type = OpeningRangeBreakoutParams
    lookback = 2

    @cached_property
    def opening_range(self) -> OpeningRange:
        return OpeningRange(self.params.minutes, calendar=self.params.calendar)

    def indicators(self) -> Sequence[Indicator]:
        return (self.opening_range,)

    def rule(self, values: Values) -> Decision | FloatArray:
        code = values[self.opening_range.outputs[2]]
        before = previous(code)
        turned = before != code
        was_out = np.abs(before) == 1
        long = turned & (code == 1)
        short = turned & (code == -1)
        failed = (code == 0) & was_out
        ended = np.isnan(code) & ~np.isnan(before)
        if self.params.allow_short:
            return choose(long, short, flat=failed | ended)
        return choose(long, flat=failed | ended | short)
