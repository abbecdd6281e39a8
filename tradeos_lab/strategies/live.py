"""The live form: one bar in, a `signals.raw` payload or nothing out.

`LiveStrategy` keeps the strategy's incremental indicator state and a window of the last
`lookback` rows of values (bar fields and indicator outputs), and runs the strategy's one rule on
that window, taking its last element: the same code as the batch form, so the same signal on
every bar. Its state serialises to JSON (`to_dict` / `from_dict`) so a restarted Signal Engine
resumes without replaying history.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from tradeos_lab.bars import BAR_COLUMNS, utc_timestamp, validate_bar
from tradeos_lab.contracts.enums import Direction
from tradeos_lab.contracts.ids import new_message_id
from tradeos_lab.contracts.messages import BarMessage
from tradeos_lab.contracts.payloads import Bar, RawSignal
from tradeos_lab.errors import ValidationError
from tradeos_lab.indicators import IndicatorSetState
from tradeos_lab.strategies.base import BAR_FIELDS, Strategy, ValueColumns
from tradeos_lab.strategies.registry import get_strategy, strategy_names, validate_strategy_name
from tradeos_lab.symbols import Timeframe, validate_symbol

_LAST = slice(-1, None)
#: What `warm_up` feeds a strategy: a symbol no market has and a flat price.
_WARM_UP_SYMBOL = "WARMUP"
_WARM_UP_PRICE = 1.0

log = logging.getLogger(__name__)


def warm_up(strategies: Iterable[Strategy[Any]], timeframe: Timeframe | str) -> None:
    """Run each strategy's live form on two made-up bars and forget them.

    The first use of a rule in a process loads its numba kernels (about 0.35 s of CPU for the
    first, 0.1 s for each other signature); a Signal Engine pays that when it starts instead of
    on its first live bar. Best effort: a strategy that fails here fails the same way on the bar
    that would have paid it, where it is reported.
    """
    start = pd.Timestamp("2000-01-03", tz="UTC")
    step = pd.Timedelta(seconds=Timeframe.parse(timeframe).seconds)
    for strategy in strategies:
        try:
            live = LiveStrategy(strategy, _WARM_UP_SYMBOL, timeframe)
            for i in range(2):
                bar = dict.fromkeys(("open", "high", "low", "close", "volume"), _WARM_UP_PRICE)
                live.update({**bar, "ts": start + i * step}, source_message_id=new_message_id())
        except Exception as e:  # best effort: see the docstring
            log.debug("warming up %s failed: %s: %s", strategy.name, type(e).__name__, e)


class LiveStrategy:
    """A strategy evaluated bar by bar for one symbol and timeframe."""

    def __init__(self, strategy: Strategy[Any], symbol: str, timeframe: Timeframe | str) -> None:
        validate_strategy_name(strategy.name)  # it names every signal on the bus
        if strategy.lookback < 1:
            raise ValidationError(
                f"strategy {strategy.name!r} has lookback {strategy.lookback}; it must be >= 1"
            )
        self.strategy = strategy
        self.symbol = validate_symbol(symbol)
        self.timeframe = Timeframe.parse(timeframe)
        self._outputs = strategy.indicator_set.outputs
        self._columns = strategy.columns
        self._inputs = (*BAR_FIELDS, *strategy.extra_inputs)
        self._given = len(self._inputs)
        self._state: IndicatorSetState = strategy.indicator_set.state()
        self._window = np.full((strategy.lookback, len(self._columns)), np.nan)
        self._values = ValueColumns((c, self._window[:, i]) for i, c in enumerate(self._columns))
        self._features = [(n, self._columns.index(n)) for n in strategy.feature_names]
        self._last_ts: pd.Timestamp | None = None

    @property
    def last_ts(self) -> pd.Timestamp | None:
        """Open time of the last bar taken (None before the first)."""
        return self._last_ts

    def on_message(self, message: BarMessage) -> RawSignal | None:
        """A bar message from `market_data` -> the signal it causes, or None."""
        return self.update(message.payload, source_message_id=message.message_id)

    def update(self, bar: Bar | Mapping[str, Any], *, source_message_id: str) -> RawSignal | None:
        """Feed the next bar (a `Bar` or a mapping with ts, open, high, low, close, volume);
        return the signal the rule gives on it, or None when it gives none."""
        fields = self._fields(bar)
        ts: pd.Timestamp = fields["ts"]
        if self._last_ts is not None and ts <= self._last_ts:
            raise ValidationError(
                f"{self.symbol} {self.timeframe.value} bar at {ts.isoformat()} is not after the "
                f"last bar at {self._last_ts.isoformat()}"
            )
        latest = self._state.update(fields)
        self._last_ts = ts
        window = self._window
        window[:-1] = window[1:]
        window[-1, : self._given] = [fields[f] for f in self._inputs]
        window[-1, self._given :] = [latest[o] for o in self._outputs]
        # The last row only: what `decide` gives there, without its pass over the window.
        strength, confidence = self.strategy.strength(self._values, len(window), checked=_LAST)
        s = float(strength[-1])
        if math.isnan(s):
            return None
        row = window[-1]
        return RawSignal(
            strategy=self.strategy.name,
            symbol=self.symbol,
            timeframe=self.timeframe,
            ts=ts.to_pydatetime(),
            direction=Direction.LONG if s > 0 else Direction.SHORT if s < 0 else Direction.FLAT,
            strength=s,
            confidence=confidence if isinstance(confidence, float) else float(confidence[-1]),
            features={n: float(row[i]) for n, i in self._features if math.isfinite(row[i])},
            source_message_id=source_message_id,
        )

    def _fields(self, bar: Bar | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(bar, Bar):
            if bar.symbol != self.symbol or bar.timeframe != self.timeframe:
                raise ValidationError(
                    f"a {bar.symbol} {bar.timeframe.value} bar was fed to the live "
                    f"{self.strategy.name} for {self.symbol} {self.timeframe.value}"
                )
            fields: dict[str, Any] = {f: getattr(bar, f) for f in BAR_FIELDS}
            fields["ts"] = utc_timestamp(bar.ts, "ts")
            fields.update(dict.fromkeys(self.strategy.extra_inputs, math.nan))
            return fields
        given = {k: bar[k] for k in BAR_COLUMNS[2:] if k in bar}
        fields = validate_bar(self.symbol, self.timeframe, given)
        for name in self.strategy.extra_inputs:
            fields[name] = _extra_value(name, bar.get(name))
        return fields

    # ---- resume after a restart ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state: strategy and parameters, indicator state, the value window."""
        cls = type(self.strategy)
        return {
            "strategy": self.strategy.name,
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "params": self.strategy.params.model_dump(mode="json"),
            "symbol": self.symbol,
            "timeframe": self.timeframe.value,
            "indicators": self._state.to_dict(),
            "window": [
                [None if math.isnan(v) else v for v in row] for row in self._window.tolist()
            ],
            "last_ts": None if self._last_ts is None else self._last_ts.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LiveStrategy:
        """Rebuild from `to_dict` output; the strategy class is the one registered under its
        name, else the saved `module:Class`."""
        try:
            name = data["strategy"]
            strategy_type = (
                get_strategy(name) if name in strategy_names() else get_strategy(data["class"])
            )
            strategy = strategy_type(data["params"])
            live = cls(strategy, data["symbol"], data["timeframe"])
            window = np.array(
                [[np.nan if v is None else v for v in row] for row in data["window"]],
                dtype=np.float64,
            )
            if window.shape != live._window.shape:
                raise ValidationError(
                    f"saved window has shape {window.shape}, the strategy needs "
                    f"{live._window.shape}"
                )
            live._window[:] = window
            state = IndicatorSetState.from_dict(data["indicators"])
            if state.outputs != live._outputs:
                raise ValidationError(
                    f"saved indicator state has outputs {state.outputs}, the strategy needs "
                    f"{live._outputs}"
                )
            live._state = state
            last = data["last_ts"]
            live._last_ts = None if last is None else utc_timestamp(last, "last_ts")
        except KeyError as e:
            raise ValidationError(f"saved live strategy state lacks {e}") from None
        return live

    def __repr__(self) -> str:
        return f"LiveStrategy({self.strategy!r}, {self.symbol!r}, {self.timeframe.value!r})"


def _extra_value(name: str, value: Any) -> float:
    """An extra input of a live bar as a float: NaN when absent, an error when not a number."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise ValidationError(f"live input {name!r} must be a number, got {value!r}")
    return float(value)
