"""A signal's result at a horizon, win rate and information coefficient, worked out by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from tradeos_lab.errors import ValidationError
from tradeos_lab.tca import horizon_result, information_coefficient, rolling_scores, scores


def test_a_bought_signal_earns_the_move_from_its_fill_price_less_fees() -> None:
    r = horizon_result(
        "buy", quantity=2, avg_price=100.05, fees=0.2, arrival_price=100.0, exit_price=101.0
    )
    assert r.forward_return == pytest.approx(0.01)
    assert r.pnl == pytest.approx(2 * 0.95 - 0.2)  # 1.7
    assert r.outcome == "win"


def test_a_sold_signal_earns_the_fall() -> None:
    r = horizon_result(
        "sell", quantity=3, avg_price=99.9, fees=0.3, arrival_price=100.0, exit_price=99.0
    )
    assert r.forward_return == pytest.approx(-0.01)
    assert r.pnl == pytest.approx(3 * 0.9 - 0.3)  # 2.4
    sold_into_a_rise = horizon_result(
        "sell", quantity=1, avg_price=100, fees=0, arrival_price=100, exit_price=101
    )
    assert (sold_into_a_rise.pnl, sold_into_a_rise.outcome) == (-1.0, "loss")


def test_a_result_from_nonsense_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="exit_price"):
        horizon_result("buy", quantity=1, avg_price=1, fees=0, arrival_price=1, exit_price=0)
    with pytest.raises(ValidationError, match="finite"):
        horizon_result("buy", quantity=1, avg_price=1, fees=math.inf, arrival_price=1, exit_price=1)


def test_information_coefficient_is_spearmans_rank_correlation() -> None:
    # ranks 1 2 3 4 against 1 3 2 4: d = 0 -1 1 0, 1 - 6 * 2 / (4 * 15) = 0.8
    assert information_coefficient([1, 2, 3, 4], [0.1, 0.2, 0.15, 0.4]) == pytest.approx(0.8)
    # ties take their average rank: x 3.5 3.5 1.5 1.5, y 4 3 2 1 -> 4 / (2 * sqrt 5)
    tied = information_coefficient([1, 1, -1, -1], [0.2, 0.1, -0.1, -0.3])
    assert tied == pytest.approx(2 / math.sqrt(5))
    assert information_coefficient([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)


def test_information_coefficient_is_nan_when_there_is_nothing_to_rank() -> None:
    assert math.isnan(information_coefficient([1, 2], [1, 2]))  # too few
    assert math.isnan(information_coefficient([1, 1, 1], [1, 2, 3]))  # constant strength
    with pytest.raises(ValidationError, match="3 strengths for 2 returns"):
        information_coefficient([1, 2, 3], [1, 2])


def test_win_rate_counts_positive_pnl_only() -> None:
    s = scores([1, -1, 1, -1], [0.1, -0.1, 0.0, 0.2], [1.0, -1.0, 0.0, 2.0])
    assert (s.wins.wins, s.wins.total, s.wins.rate) == (2, 4, 0.5)


def test_rolling_scores_cover_each_strategys_latest_window() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [
        ("a", 0, 1.0, 0.01, 1.0),
        ("b", 1, 1.0, 0.01, -1.0),
        ("a", 2, -1.0, -0.02, -1.0),
        ("a", 3, 0.5, 0.03, 2.0),
    ]
    frame = pd.DataFrame(
        [(s, t0 + timedelta(minutes=m), x, r, p) for s, m, x, r, p in rows],
        columns=["strategy", "signal_at", "strength", "forward_return", "pnl"],
    )
    out = rolling_scores(frame, window=2)
    a = out[out["strategy"] == "a"]
    assert a["samples"].to_list() == [1, 2, 2]
    assert a["win_rate"].to_list() == [1.0, 0.5, 0.5]
    assert out[out["strategy"] == "b"]["win_rate"].to_list() == [0.0]
    assert out["ic"].isna().all()  # never three outcomes in a window of two
    with pytest.raises(ValidationError, match="window"):
        rolling_scores(frame, window=0)
