"""Parameters are typed and validated; a rule's output is checked; bad bars are refused."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pydantic
import pytest

from tradeos_lab.contracts import new_message_id
from tradeos_lab.errors import ValidationError
from tradeos_lab.indicators import SMA, Indicator
from tradeos_lab.strategies import (
    Decision,
    FloatArray,
    MacdTrend,
    OpeningRangeBreakout,
    RsiReversion,
    SmaCross,
    SmaCrossParams,
    Strategy,
    StrategyParams,
    Values,
    choose,
)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: SmaCross(fast=50, slow=10), "fast .50. must be shorter than slow .10."),
        (lambda: SmaCross(fast=0), "fast: Input should be greater than or equal to 1"),
        (lambda: SmaCross(fast="ten"), "fast: Input should be a valid integer"),
        (lambda: SmaCross(speed=3), "speed: Extra inputs are not permitted"),
        (lambda: RsiReversion(oversold=60), "oversold .60.0. < exit_level .50.0."),
        (lambda: MacdTrend(fast=26, slow=12), "fast .26. must be shorter than slow"),
        (lambda: OpeningRangeBreakout(minutes=0), "minutes: Input should be greater"),
    ],
)
def test_bad_parameters_raise_a_validation_error_naming_them(make, problem: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match=problem):
        make()


def test_parameters_are_typed_frozen_and_comparable() -> None:
    strategy = SmaCross({"fast": 5}, slow=20)
    assert strategy.params == SmaCrossParams(fast=5, slow=20)
    assert strategy == SmaCross(fast=5, slow=20)
    assert strategy != SmaCross(fast=5, slow=30)
    assert repr(strategy) == "SmaCross(fast=5, slow=20, allow_short=True)"
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        strategy.params.fast = 7  # type: ignore[misc]


def test_unknown_calendar_is_refused_when_the_strategy_is_made() -> None:
    with pytest.raises(ValidationError, match=r"calendar: .*unknown market calendar 'NOPE'"):
        OpeningRangeBreakout(calendar="NOPE")


class Overdrive(Strategy[StrategyParams]):
    """A broken rule: strength 2 on every bar after the average is known."""

    name = "test_overdrive"

    def indicators(self) -> Sequence[Indicator]:
        return (SMA(5),)

    def rule(self, values: Values) -> Decision | FloatArray:
        return np.where(np.isnan(values["sma_5"]), np.nan, 2.0)


class Doubtful(Overdrive):
    """A broken rule: confidence above 1."""

    def rule(self, values: Values) -> Decision | FloatArray:
        return Decision(strength=0.5, confidence=1.5)


class Misspelt(Overdrive):
    """A broken rule: reads an indicator it did not declare."""

    def rule(self, values: Values) -> Decision | FloatArray:
        return choose(values["close"] > values["sma_50"])


def test_a_rule_reading_an_unknown_column_names_the_columns_there_are(
    generated_bars: pd.DataFrame,
) -> None:
    with pytest.raises(ValidationError, match=r"reads 'sma_50'.*'close'.*'sma_5'"):
        Misspelt().signals(generated_bars)
    bar = generated_bars[["ts", "open", "high", "low", "close", "volume"]].iloc[0].to_dict()
    with pytest.raises(ValidationError, match=r"reads 'sma_50'"):
        Misspelt().live("BTC-USD", "1m").update(bar, source_message_id=new_message_id())


@pytest.mark.parametrize(("cls", "problem"), [(Overdrive, "strength"), (Doubtful, "confidence")])
def test_rule_output_out_of_range_is_refused_in_both_forms(
    cls: type[Strategy[StrategyParams]], problem: str, generated_bars: pd.DataFrame
) -> None:
    strategy = cls()
    with pytest.raises(ValidationError, match=f"{problem} outside"):
        strategy.signals(generated_bars)
    live = strategy.live("BTC-USD", "1m")
    with pytest.raises(ValidationError, match=f"{problem} outside"):  # noqa: PT012 - feeds bars until the rule speaks
        for bar in generated_bars.iloc[:10].to_dict("records"):
            live.update(
                {k: bar[k] for k in ("ts", "open", "high", "low", "close", "volume")},
                source_message_id=new_message_id(),
            )


def test_live_refuses_a_bar_that_is_not_after_the_last(generated_bars: pd.DataFrame) -> None:
    live = SmaCross().live("BTC-USD", "1m")
    bars = generated_bars[["ts", "open", "high", "low", "close", "volume"]].to_dict("records")
    live.update(bars[1], source_message_id=new_message_id())
    for stale in (bars[1], bars[0]):
        with pytest.raises(ValidationError, match="is not after the last bar"):
            live.update(stale, source_message_id=new_message_id())


def test_live_refuses_a_bar_of_another_series(generated_bars: pd.DataFrame) -> None:
    from tradeos_lab.contracts import Bar

    row = generated_bars.iloc[0]
    bar = Bar(
        symbol="ETH-USD",
        timeframe="1m",
        ts=row.ts,
        open=row.open,
        high=row.high,
        low=row.low,
        close=row.close,
        volume=row.volume,
        source="synthetic",
    )
    with pytest.raises(ValidationError, match="ETH-USD 1m bar was fed"):
        SmaCross().live("BTC-USD", "1m").update(bar, source_message_id=new_message_id())


def test_signals_refuse_several_symbols(two_symbols: pd.DataFrame) -> None:
    with pytest.raises(ValidationError, match="one symbol's bars, got 2"):
        SmaCross().signals(two_symbols)


def test_bars_shorter_than_the_warmup_are_refused(generated_bars: pd.DataFrame) -> None:
    with pytest.raises(ValidationError, match="needs at least 50 bars, got 20"):
        SmaCross(fast=10, slow=50).signals(generated_bars.iloc[:20])
