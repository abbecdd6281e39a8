"""Technical indicators in two forms that agree: batch over whole bar frames (backtests,
research) and incremental states that take one bar at a time (the live Signal Engine).

    from tradeos_lab.indicators import RSI, MACD, IndicatorSet
    indicators = IndicatorSet([RSI(14), MACD()])
    frame = indicators.batch(bars)          # columns rsi_14, macd_12_26_9, ...
    state = indicators.state()
    values = state.update(bar)              # the same values, one bar at a time

Batch values equal TA-Lib's where TA-Lib has the indicator (see `kernels`); the states
reproduce them (see `states`); `live` keeps the cache's per-symbol indicator hash filled.
"""

from tradeos_lab.indicators.kernels import (
    atr,
    atr_regime,
    bbands,
    ema,
    macd,
    opening_range,
    regime_code,
    rolling_percentile,
    rsi,
    session_vwap,
    sma,
)
from tradeos_lab.indicators.sessions import check_calendar
from tradeos_lab.indicators.specs import (
    ATR,
    EMA,
    MACD,
    RSI,
    SMA,
    ATRRegime,
    BBands,
    Indicator,
    IndicatorSet,
    IndicatorSetState,
    OpeningRange,
    SessionVWAP,
    VolumePercentile,
    compute,
    indicator_from_dict,
)
from tradeos_lab.indicators.states import IndicatorState

__all__ = [
    "ATR",
    "EMA",
    "MACD",
    "RSI",
    "SMA",
    "ATRRegime",
    "BBands",
    "Indicator",
    "IndicatorSet",
    "IndicatorSetState",
    "IndicatorState",
    "OpeningRange",
    "SessionVWAP",
    "VolumePercentile",
    "atr",
    "atr_regime",
    "bbands",
    "check_calendar",
    "compute",
    "ema",
    "indicator_from_dict",
    "macd",
    "opening_range",
    "regime_code",
    "rolling_percentile",
    "rsi",
    "session_vwap",
    "sma",
]
