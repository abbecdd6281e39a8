"""`Strategy`: typed parameters, the indicators they need, and one rule over their values.

A strategy's rule is written once, as numpy expressions over named value arrays: the bar fields
(`BAR_FIELDS`) and every output of its indicators. The batch form (`signals`, `batch`) hands the
rule whole arrays for a backtest; the live form (`live`) hands it the last `lookback` rows and
takes the last element, so both forms give the same signal bar for bar.

A rule returns a strength per bar (or a `Decision` with a confidence too):

- NaN: no signal on this bar;
- 0: go flat (close whatever is open);
- in (0, 1]: go long with that strength; in [-1, 0): go short.

Confidence is the rule's own certainty in [0, 1] (1.0 when the rule gives none); the learning loop
calibrates it later from outcomes.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeAlias, TypeVar, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import pydantic
from pydantic import BaseModel, ConfigDict

from tradeos_lab.errors import ValidationError
from tradeos_lab.indicators import IndicatorSet

if TYPE_CHECKING:
    from tradeos_lab.contracts import Bar
    from tradeos_lab.indicators import Indicator
    from tradeos_lab.lab import Lab
    from tradeos_lab.strategies.batch import SignalFrames
    from tradeos_lab.strategies.live import LiveStrategy
    from tradeos_lab.symbols import Timeframe

FloatArray: TypeAlias = npt.NDArray[np.float64]
Values: TypeAlias = Mapping[str, FloatArray]
"""What a rule reads: bar fields and indicator outputs by name, equal-length float arrays."""

BAR_FIELDS = ("open", "high", "low", "close", "volume")
"""The bar fields every rule may read beside its indicators."""


class ValueColumns(dict[str, FloatArray]):
    """The `values` a rule gets: a dict whose missing key is a `ValidationError` listing the
    columns there are (a misspelt indicator name in a notebook rule says what to use)."""

    def __missing__(self, key: str) -> FloatArray:
        raise ValidationError(
            f"the rule reads {key!r}, which is not a bar field or an output of the strategy's "
            f"indicators; there are {sorted(self)}"
        )


class StrategyParams(BaseModel):
    """Base of every strategy's parameters: immutable, and an unknown name is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True, slots=True)
class Decision:
    """What a rule concluded per bar: strength (NaN none, 0 flat, sign = side) and confidence."""

    strength: FloatArray | float
    confidence: FloatArray | float = 1.0


P = TypeVar("P", bound=StrategyParams)


class Strategy(Generic[P]):
    """One trading rule with validated parameters, evaluated in batch or live from one source.

    A subclass sets `name` (lower-case, the name it is registered and deployed under),
    `params_type` (its `StrategyParams` model), `lookback` (rows the rule reads: 1 for a rule on
    the current bar, 2 for a crossover that compares with the previous bar), and implements
    `indicators()` and `rule(values)`.
    """

    name: ClassVar[str] = ""
    params_type: ClassVar[type[StrategyParams]] = StrategyParams
    lookback: ClassVar[int] = 1
    #: Per-bar values the rule reads beside the bars and indicators (news sentiment): the batch
    #: form takes them as columns of the bar frame, the live form from the bar mapping it is
    #: given (NaN when absent, so the rule gives no signal).
    extra_inputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: P | Mapping[str, Any] | None = None, /, **overrides: Any) -> None:
        if isinstance(params, StrategyParams):
            given: dict[str, Any] = {**params.model_dump(), **overrides}
        else:
            given = {**(params or {}), **overrides}
        try:
            self.params: P = cast(P, self.params_type.model_validate(given))
        except pydantic.ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'parameters'}: {err['msg']}"
                for err in e.errors()
            )
            raise ValidationError(f"strategy {self.name!r}: {problems}") from None

    # ---- what a subclass writes ---------------------------------------------------------------

    def indicators(self) -> Sequence[Indicator]:
        """The indicator specs the rule reads, built from the parameters."""
        raise NotImplementedError(f"{type(self).__name__} must define indicators()")

    def rule(self, values: Values) -> Decision | FloatArray:
        """The signal per bar from `values` (numpy expressions only, see the module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} must define rule(values)")

    # ---- derived ------------------------------------------------------------------------------

    @cached_property
    def indicator_set(self) -> IndicatorSet:
        """The strategy's indicators as one set (batch and incremental)."""
        return IndicatorSet(list(self.indicators()))

    @property
    def columns(self) -> tuple[str, ...]:
        """Every value name the rule may read: bar fields, extra inputs, indicator outputs."""
        return (*BAR_FIELDS, *self.extra_inputs, *self.indicator_set.outputs)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The values a signal carries as `features`: the close and every indicator output."""
        return ("close", *self.indicator_set.outputs)

    def decide(
        self, values: Values, length: int, *, checked: slice = slice(None)
    ) -> tuple[FloatArray, FloatArray]:
        """Run the rule on `length` rows -> (strength, confidence) arrays, confidence NaN where
        there is no signal; the `checked` rows must be in range (`ValidationError` otherwise)."""
        s, c = self.strength(values, length, checked=checked)
        return s, np.where(np.isnan(s), np.nan, c)

    def strength(
        self, values: Values, length: int, *, checked: slice = slice(None)
    ) -> tuple[FloatArray, FloatArray | float]:
        """Run the rule on `length` rows -> (strength per row, confidence as the rule gave it:
        per row or one number), both checked as `decide` checks them. A sweep reads only the
        strength, so the confidence is not spread over the rows here."""
        out = self.rule(values)
        strength, confidence = (
            (out.strength, out.confidence) if isinstance(out, Decision) else (out, 1.0)
        )
        s = _per_row(strength, length)
        s_checked = s[checked]
        # The live form checks one row, on every bar of the pipeline: as plain floats, the same
        # comparisons without the cost of numpy's reductions over a one-element array.
        one_row = s_checked.size == 1
        first = float(s_checked[0]) if one_row else math.nan
        # NaN compares False; an infinity is caught. Two comparisons, not a temporary |s|.
        if (
            (first > 1 or first < -1)
            if one_row
            else ((s_checked > 1).any() or (s_checked < -1).any())
        ):
            raise ValidationError(f"strategy {self.name!r} gave a strength outside [-1, 1]")
        one = np.asarray(confidence, dtype=np.float64)
        c: FloatArray | float = float(one) if one.ndim == 0 else _per_row(one, length)
        if one_row:
            confident = (
                math.isnan(first) or 0 <= (c if isinstance(c, float) else float(c[checked][0])) <= 1
            )
        else:
            # one confidence for every row: checked once, where there is a signal
            chosen = (
                np.full(0 if np.isnan(s_checked).all() else 1, c)
                if isinstance(c, float)
                else c[checked][~np.isnan(s_checked)]
            )
            confident = bool(((chosen >= 0) & (chosen <= 1)).all())
        if not confident:  # NaN and infinities fail both comparisons
            raise ValidationError(f"strategy {self.name!r} gave a confidence outside [0, 1]")
        return s, c

    # ---- the two forms ------------------------------------------------------------------------

    def signals(self, bars: pd.DataFrame) -> pd.DataFrame:
        """One symbol's bars -> per bar: ts, close, indicator outputs, strength, confidence,
        direction (+1/-1/0), and vectorbt's entries/exits/short_entries/short_exits."""
        from tradeos_lab.strategies.batch import symbol_signals

        return symbol_signals(self, bars)

    def batch(self, bars: pd.DataFrame) -> SignalFrames:
        """Bars of one or many symbols (a long frame) -> wide frames (ts x symbol) for vectorbt."""
        from tradeos_lab.strategies.batch import batch_signals

        return batch_signals(self, bars)

    def live_inputs(self, bar: Bar, lab: Lab) -> Bar | Mapping[str, Any]:
        """What the live form takes for `bar` in the pipeline: the bar itself, or, for a strategy
        with `extra_inputs`, the bar's fields with those inputs read from the lab's stores as
        its batch form computes them (the Signal Engine calls this for every bar)."""
        return bar

    def live(self, symbol: str, timeframe: Timeframe | str) -> LiveStrategy:
        """The incremental form for one symbol and timeframe: one bar in, a signal or None out."""
        from tradeos_lab.strategies.live import LiveStrategy

        return LiveStrategy(self, symbol, timeframe)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Strategy)
            and type(other) is type(self)
            and other.params == self.params
        )

    def __hash__(self) -> int:
        return hash((type(self), self.params))


def _per_row(value: FloatArray | float, length: int) -> FloatArray:
    """A rule's output as one float per row (a number applies to every row)."""
    array = np.asarray(value, dtype=np.float64)
    if array.shape == (length,):
        return array
    if array.ndim == 0:
        return np.full(length, float(array))
    raise ValidationError(f"a rule returned shape {array.shape} for {length} rows")


def strategy_hash(strategy: Strategy[Any] | type[Strategy[Any]]) -> str:
    """SHA-256 of the strategy class's source (of its rule's bytecode when the source is not
    available, e.g. a class typed into a console), so a changed rule is a different run."""
    cls = strategy if isinstance(strategy, type) else type(strategy)
    try:
        text = inspect.getsource(cls).encode()
    except (OSError, TypeError):
        code = cls.rule.__code__
        text = code.co_code + repr(code.co_consts).encode() + repr(code.co_names).encode()
    return hashlib.sha256(text).hexdigest()
