"""Slippage and implementation shortfall, checked against numbers worked out by hand."""

from __future__ import annotations

import pytest

from tradeos_lab.errors import ValidationError
from tradeos_lab.tca import implementation_shortfall, slippage_bps


def test_slippage_is_positive_when_it_costs_on_either_side() -> None:
    assert slippage_bps("buy", 100.05, 100.0) == pytest.approx(5.0)  # paid 5 bps above
    assert slippage_bps("sell", 99.95, 100.0) == pytest.approx(5.0)  # received 5 bps below
    assert slippage_bps("sell", 100.10, 100.0) == pytest.approx(-10.0)  # an improvement
    assert slippage_bps("buy", 50.0, 50.0) == 0.0


@pytest.mark.parametrize(
    ("side", "price", "arrival"),
    [("hold", 100.0, 100.0), ("buy", 0.0, 100.0), ("buy", 100.0, float("nan")), ("buy", 1, -1)],
)
def test_slippage_of_nonsense_is_refused(side: str, price: float, arrival: float) -> None:
    with pytest.raises(ValidationError):
        slippage_bps(side, price, arrival)


def test_shortfall_of_a_partly_filled_buy_counts_fees_and_the_missed_rise() -> None:
    # Buy 10 at arrival 100: 4 @ 100.5 (fee 0.4), 3 @ 101 (fee 0.3), 3 unfilled, last 102.
    s = implementation_shortfall(
        "buy",
        ordered_quantity=10,
        arrival_price=100.0,
        fills=[(4, 100.5, 0.4), (3, 101.0, 0.3)],
        last_price=102.0,
    )
    assert s.execution_cost == pytest.approx(4 * 0.5 + 3 * 1.0)  # 5
    assert s.fees == pytest.approx(0.7)
    assert s.opportunity_cost == pytest.approx(3 * 2.0)  # 6
    assert s.total == pytest.approx(11.7)
    assert s.bps == pytest.approx(11.7 / 1000 * 10_000)  # 117
    assert s.filled_quantity == 7
    assert s.avg_price == pytest.approx(705 / 7)


def test_shortfall_of_a_filled_sell_is_its_price_give_up_and_fee() -> None:
    # Sell 5 at arrival 50, all @ 49.9 with a fee of 0.25; the last price no longer matters.
    s = implementation_shortfall(
        "sell", ordered_quantity=5, arrival_price=50.0, fills=[(5, 49.9, 0.25)], last_price=48.0
    )
    assert (s.execution_cost, s.opportunity_cost) == (pytest.approx(0.5), 0.0)
    assert s.total == pytest.approx(0.75)
    assert s.bps == pytest.approx(30.0)


def test_shortfall_of_an_unfilled_sell_is_what_the_fall_cost() -> None:
    s = implementation_shortfall(
        "sell", ordered_quantity=2, arrival_price=50.0, fills=[], last_price=49.0
    )
    assert (s.execution_cost, s.fees, s.opportunity_cost) == (0.0, 0.0, pytest.approx(2.0))
    assert s.avg_price is None


def test_shortfall_with_more_filled_than_ordered_is_refused() -> None:
    with pytest.raises(ValidationError, match="exceed the ordered quantity"):
        implementation_shortfall(
            "buy", ordered_quantity=1, arrival_price=10, fills=[(2, 10, 0)], last_price=10
        )
