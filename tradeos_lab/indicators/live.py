"""The cache's per-symbol indicator hash, filled from the incremental states.

The live-state cache keeps, per symbol and timeframe, the last bars and "all technical
indicators" at the latest bar. `update_cache` is the one writer: it advances an
`IndicatorSetState` by one bar, writes the bar with the new values (`Cache.append_bar`, one
atomic script) and then the states themselves (JSON under `Keys.indicator_state`). After a
restart `resume_from_cache` loads the states and replays only the cached bars newer than them
(a crash between the two writes leaves the states one bar behind), so nothing is recomputed
from history; without saved states (or for a different indicator set) it warms fresh states on
the cached bars. The cache is a fast copy: losing it costs a warm-up, never a wrong value.

The hash holds finite values only (the cache refuses NaN): an output still warming up, or
undefined outside a session, is absent rather than NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from tradeos_lab.bars import BAR_COLUMNS, validate_bar
from tradeos_lab.errors import ValidationError
from tradeos_lab.indicators.specs import IndicatorSet, IndicatorSetState
from tradeos_lab.symbols import Timeframe
from tradeos_lab.tiers.cache import Cache

_BAR_FIELDS = BAR_COLUMNS[2:]


def update_cache(
    cache: Cache,
    symbol: str,
    timeframe: Timeframe | str,
    state: IndicatorSetState,
    bar: Mapping[str, Any] | Any,
) -> dict[str, float]:
    """Advance `state` by `bar`, cache the bar with its indicator values, save the state.

    `bar` is a mapping or a `Bar` contract; it is validated before the state moves, so a bad
    bar changes nothing. Returns every output's latest value (NaN while warming up).
    """
    fields = _bar_fields(bar)
    checked = validate_bar(symbol, timeframe, fields)
    values = state.update(checked)
    finite = {name: value for name, value in values.items() if math.isfinite(value)}
    cache.append_bar(symbol, timeframe, fields, indicators=finite)
    save_state(cache, symbol, timeframe, state)
    return values


def save_state(
    cache: Cache, symbol: str, timeframe: Timeframe | str, state: IndicatorSetState
) -> None:
    """Store the states as JSON; they expire with the cached bars they continue."""
    cache.redis.set(
        cache.keys.indicator_state(symbol, timeframe),
        json.dumps(state.to_dict(), allow_nan=False, separators=(",", ":")),
        ex=cache.bar_ttl(timeframe),
    )


def load_state(cache: Cache, symbol: str, timeframe: Timeframe | str) -> IndicatorSetState | None:
    """The saved states, or None if there are none or they cannot be read."""
    raw = cache.redis.get(cache.keys.indicator_state(symbol, timeframe))
    if raw is None:
        return None
    try:
        return IndicatorSetState.from_dict(json.loads(raw))
    except (ValueError, ValidationError):
        return None  # a corrupt copy is rebuilt from the cached bars, never trusted


def resume_from_cache(
    cache: Cache, symbol: str, timeframe: Timeframe | str, indicators: IndicatorSet
) -> IndicatorSetState:
    """The states of `indicators` for one symbol and timeframe, as of the latest cached bar.

    Saved states of the same indicator set are continued with the cached bars they have not
    seen; otherwise fresh states are warmed on every cached bar. When bars were replayed, the
    indicator hash and the saved states are brought up to date.
    """
    state = load_state(cache, symbol, timeframe)
    if state is None or state.indicators != indicators:
        state = indicators.state()
    bars = cache.get_bars(symbol, timeframe)
    if state.last_ts is not None:
        bars = bars[bars["ts"] > pd.Timestamp(state.last_ts, tz="UTC")]
    values: dict[str, float] = {}
    for row in bars.loc[:, ["ts", "open", "high", "low", "close", "volume"]].to_dict("records"):
        values = state.update(row)
    if len(bars):
        finite = {name: value for name, value in values.items() if math.isfinite(value)}
        cache.set_indicators(symbol, timeframe, finite, ts=bars["ts"].iloc[-1])
        save_state(cache, symbol, timeframe, state)
    return state


def _bar_fields(bar: Mapping[str, Any] | Any) -> dict[str, Any]:
    source = bar if isinstance(bar, Mapping) else getattr(bar, "__dict__", {})
    return {name: source[name] for name in _BAR_FIELDS if source.get(name) is not None}
