"""Strategies are found by name, by module:Class and by path.py:Class; names are canonical."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tradeos_lab.errors import ValidationError
from tradeos_lab.indicators import RSI, Indicator
from tradeos_lab.strategies import (
    Decision,
    FloatArray,
    MacdTrend,
    OpeningRangeBreakout,
    RsiReversion,
    SmaCross,
    Strategy,
    StrategyParams,
    Values,
    get_strategy,
    register,
    strategy_names,
    unregister,
)


class RsiAboveParams(StrategyParams):
    level: float = 60.0


class RsiAbove(Strategy[RsiAboveParams]):
    """A notebook-style strategy: long while the RSI is above `level`."""

    name = "test_rsi_above"
    params_type = RsiAboveParams

    def indicators(self) -> Sequence[Indicator]:
        return (RSI(14),)

    def rule(self, values: Values) -> Decision | FloatArray:
        rsi = values["rsi_14"]
        return Decision(strength=(rsi > self.params.level) * 1.0, confidence=0.5)


@pytest.fixture
def registered() -> Iterator[type[RsiAbove]]:
    register(RsiAbove)
    yield RsiAbove
    unregister("test_rsi_above")


def test_builtins_are_registered_by_name() -> None:
    assert {"sma_cross", "rsi_reversion", "opening_range_breakout", "macd_trend"} <= set(
        strategy_names()
    )
    assert get_strategy("sma_cross") is SmaCross
    assert get_strategy("rsi_reversion") is RsiReversion
    assert get_strategy("opening_range_breakout") is OpeningRangeBreakout
    assert get_strategy("macd_trend") is MacdTrend


def test_a_notebook_strategy_registers_with_one_call(registered: type[RsiAbove]) -> None:
    assert get_strategy("test_rsi_above") is registered
    assert "test_rsi_above" in strategy_names()


def test_redefining_the_same_class_replaces_it(registered: type[RsiAbove]) -> None:
    """Re-running a notebook cell defines a new class object with the same name and place."""

    class RsiAbove(Strategy[RsiAboveParams]):  # same module and qualname as a re-run cell
        name = "test_rsi_above"
        params_type = RsiAboveParams

    RsiAbove.__qualname__ = registered.__qualname__
    RsiAbove.__module__ = registered.__module__
    register(RsiAbove)
    assert get_strategy("test_rsi_above") is RsiAbove


def test_a_taken_name_is_refused_for_another_class(registered: type[RsiAbove]) -> None:
    class Other(Strategy[StrategyParams]):
        name = "test_rsi_above"

    with pytest.raises(ValidationError, match="taken"):
        register(Other)
    register(Other, replace=True)
    assert get_strategy("test_rsi_above") is Other


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("SmaCross", "lower-case"),
        ("", "non-empty"),
        ("with space", "machine name"),
        ("x" * 65, "machine name"),
    ],
)
def test_a_name_not_in_canonical_form_is_refused(name: str, problem: str) -> None:
    cls = type("Bad", (Strategy,), {"name": name})
    with pytest.raises(ValidationError, match=problem):
        register(cls)


def test_only_strategy_classes_register() -> None:
    with pytest.raises(ValidationError, match="Strategy subclasses"):
        register(dict)  # type: ignore[type-var]


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValidationError, match=r"unknown strategy 'nope'.*sma_cross"):
        get_strategy("nope")


def test_a_class_is_found_by_module_and_name() -> None:
    assert get_strategy("tradeos_lab.strategies.builtins.sma_cross:SmaCross") is SmaCross
    with pytest.raises(ValidationError, match="cannot import"):
        get_strategy("no_such_module_xyz:Thing")
    with pytest.raises(ValidationError, match="does not name a Strategy"):
        get_strategy("tradeos_lab.strategies.base:BAR_FIELDS")


def test_a_class_is_found_by_file_path_and_name(tmp_path: Path) -> None:
    path = tmp_path / "my_strategy.py"
    path.write_text(
        textwrap.dedent(
            """
            from tradeos_lab.indicators import SMA
            from tradeos_lab.strategies import Strategy, StrategyParams, choose

            class AboveAverage(Strategy[StrategyParams]):
                name = "above_average"

                def indicators(self):
                    return (SMA(20),)

                def rule(self, values):
                    return choose(values["close"] > values["sma_20"])
            """
        )
    )
    cls = get_strategy(f"{path}:AboveAverage")
    assert cls.name == "above_average"
    assert cls().indicator_set.outputs == ("sma_20",)
    with pytest.raises(ValidationError, match="does not exist"):
        get_strategy(f"{tmp_path / 'missing.py'}:AboveAverage")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ValidationError, match=r"failed to import.*boom"):
        get_strategy(f"{broken}:Anything")
