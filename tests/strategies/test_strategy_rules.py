"""Rule helpers read the same on whole arrays and on a live window of `lookback` rows."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as hst
from hypothesis.extra.numpy import arrays

from tradeos_lab import strategies as st
from tradeos_lab.errors import ValidationError
from tradeos_lab.strategies import choose, crossed_above, crossed_below, crossings, previous

NAN = np.nan


def test_previous_shifts_by_whole_rows_and_fills_with_nan() -> None:
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(previous(x), [NAN, 1.0, 2.0])
    np.testing.assert_array_equal(previous(x, 2), [NAN, NAN, 1.0])
    np.testing.assert_array_equal(previous(x, 3), [NAN, NAN, NAN])


def test_crosses_fire_on_the_bar_of_the_cross_only() -> None:
    a = np.array([NAN, 1.0, 3.0, 4.0, 1.0, 2.0])
    b = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    assert crossed_above(a, b).tolist() == [False, False, True, False, False, False]
    assert crossed_below(a, b).tolist() == [False, False, False, False, True, False]
    # a fixed level reads like a constant array
    assert crossed_above(a, 2.0).tolist() == crossed_above(a, b).tolist()
    assert crossed_below(a, 2.0).tolist() == crossed_below(a, b).tolist()


def test_choose_gives_nan_for_no_signal_and_lets_a_side_win_over_flat() -> None:
    long = np.array([True, False, False, True, False])
    short = np.array([False, True, False, True, False])
    flat = np.array([True, True, True, False, False])
    out = choose(long, short, flat, long_strength=0.5, short_strength=np.full(5, 0.25))
    np.testing.assert_array_equal(out, [0.5, -0.25, 0.0, NAN, NAN])
    np.testing.assert_array_equal(choose(long), [1.0, NAN, NAN, 1.0, NAN])


def crossover_rule(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return choose(crossed_above(a, b), crossed_below(a, b), flat=a == b)


series = arrays(
    np.float64,
    hst.integers(2, 40),
    elements=hst.one_of(hst.just(NAN), hst.floats(-3, 3, allow_nan=False).map(round)),
)


@settings(max_examples=200, deadline=None)
@given(a=series, data=hst.data())
def test_a_rule_on_the_last_two_rows_equals_the_rule_on_the_whole_array(
    a: np.ndarray, data: hst.DataObject
) -> None:
    b = data.draw(
        arrays(np.float64, len(a), elements=hst.one_of(hst.just(NAN), hst.floats(-3, 3).map(round)))
    )
    whole = crossover_rule(a, b)
    for i in range(len(a)):
        window = slice(max(0, i - 1), i + 1)
        padded_a = np.concatenate([np.full(2 - len(a[window]), NAN), a[window]])
        padded_b = np.concatenate([np.full(2 - len(b[window]), NAN), b[window]])
        np.testing.assert_array_equal(crossover_rule(padded_a, padded_b)[-1], whole[i])


@settings(max_examples=200, deadline=None)
@given(a=series, data=hst.data())
def test_crossings_and_choose_equal_their_definitions_by_shifted_comparisons(
    a: np.ndarray, data: hst.DataObject
) -> None:
    b = data.draw(arrays(np.float64, len(a), elements=hst.one_of(hst.just(NAN), hst.floats(-3, 3))))
    level = data.draw(hst.floats(-3, 3))
    for other in (b, level, np.column_stack([b, b[::-1]])):
        wide = a if np.ndim(other) < 2 else np.column_stack([a, a])
        before = previous(np.broadcast_to(other, wide.shape))
        with np.errstate(invalid="ignore"):
            above = (wide > other) & (previous(wide) <= before)
            below = (wide < other) & (previous(wide) >= before)
        up, down = crossings(wide, other)
        np.testing.assert_array_equal(up, above)
        np.testing.assert_array_equal(down, below)
        np.testing.assert_array_equal(crossed_above(wide, other), above)
        np.testing.assert_array_equal(crossed_below(wide, other), below)
    long, short, flat = (data.draw(arrays(np.bool_, len(a))) for _ in range(3))
    strength = np.abs(b)
    expected = np.where(flat, 0.0, NAN)
    expected[long] = strength[long]
    expected[short] = -0.5
    expected[long & short] = NAN
    np.testing.assert_array_equal(
        choose(long, short, flat, long_strength=strength, short_strength=0.5), expected
    )
    np.testing.assert_array_equal(choose(long), np.where(long, 1.0, NAN))


class _Given(st.Strategy[st.StrategyParams]):
    """Strength and confidence as the values give them."""

    name = "given"

    def indicators(self) -> tuple[()]:
        return ()

    def rule(self, values: Any) -> st.Decision:
        return st.Decision(values["s"], values["c"])


def _verdict(values: dict[str, Any], length: int, checked: slice) -> str:
    try:
        _Given().strength(values, length, checked=checked)
    except ValidationError as e:
        return str(e)
    return "ok"


_VALUE = hst.sampled_from([NAN, np.inf, -np.inf, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5])


@given(strength=_VALUE, confidence=_VALUE, per_row=hst.booleans())
@settings(max_examples=200, deadline=None)
def test_the_live_forms_one_checked_row_is_judged_as_in_a_window_of_many(
    strength: float, confidence: float, per_row: bool
) -> None:
    """The one row the live form checks passes or fails the strength and confidence checks as
    the same row does among others that give no signal."""
    c_one: Any = np.array([0.5, confidence]) if per_row else confidence
    one = _verdict({"s": np.array([0.5, strength]), "c": c_one}, 2, slice(-1, None))
    c_many: Any = np.array([0.5, 0.5, confidence]) if per_row else confidence
    many = _verdict({"s": np.array([NAN, NAN, strength]), "c": c_many}, 3, slice(None))
    assert one == many
    expected_ok = not (strength > 1 or strength < -1) and (
        np.isnan(strength) or 0 <= confidence <= 1
    )
    assert (one == "ok") == expected_ok
