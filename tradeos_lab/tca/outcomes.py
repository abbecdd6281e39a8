"""What a signal earned after it was acted on, and how good a strategy's signals are.

A signal's outcome is read at holding horizons counted in bars of its timeframe: the horizon-h
exit is the close of the h-th bar after the signal's bar. Per strategy, over a rolling window of
its latest outcomes: the win rate (share of outcomes with P&L > 0) and the information
coefficient (Spearman rank correlation of signal strength and forward return).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tradeos_lab.contracts import Side
from tradeos_lab.errors import ValidationError
from tradeos_lab.tca.costs import side_sign
from tradeos_lab.tiers.cache import WinRate

#: Fewest outcomes an information coefficient is computed from; fewer give NaN.
MIN_IC_SAMPLES = 3


@dataclass(frozen=True)
class HorizonResult:
    """A signal's result at one horizon: the market's move and what its fills made of it."""

    forward_return: float
    """exit close / arrival close - 1: the move the signal predicted, whatever was traded."""
    pnl: float
    """What the signal's fills earned to the exit close, net of their fees."""

    @property
    def outcome(self) -> str:
        """win, loss or flat, by the sign of the P&L."""
        return "win" if self.pnl > 0 else "loss" if self.pnl < 0 else "flat"


def horizon_result(
    side: Side | str,
    *,
    quantity: float,
    avg_price: float,
    fees: float,
    arrival_price: float,
    exit_price: float,
) -> HorizonResult:
    """The result at one horizon of a signal whose fills bought (`side` buy) or sold `quantity`
    at `avg_price` paying `fees`, the signal's bar closing at `arrival_price` and the horizon's
    bar at `exit_price`:

        forward_return = exit_price / arrival_price - 1
        pnl            = s * quantity * (exit_price - avg_price) - fees   (s = +1 buy, -1 sell)

    The position is marked at the exit close; closing it would cost a further fee, not counted.
    """
    if not (  # the common case, checked first (the timer measures every horizon of every fill)
        quantity.__class__ is float
        and avg_price.__class__ is float
        and arrival_price.__class__ is float
        and exit_price.__class__ is float
        and fees.__class__ is float
        and 0 < quantity < math.inf
        and 0 < avg_price < math.inf
        and 0 < arrival_price < math.inf
        and 0 < exit_price < math.inf
        and -math.inf < fees < math.inf
    ):
        _check_result_inputs(quantity, avg_price, fees, arrival_price, exit_price)
    sign = side_sign(side)
    return HorizonResult(
        forward_return=exit_price / arrival_price - 1,
        pnl=sign * quantity * (exit_price - avg_price) - fees,
    )


def _check_result_inputs(
    quantity: float, avg_price: float, fees: float, arrival_price: float, exit_price: float
) -> None:
    values = {
        "quantity": quantity,
        "avg_price": avg_price,
        "arrival_price": arrival_price,
        "exit_price": exit_price,
    }
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValidationError(f"{name} must be a positive number, got {value!r}")
    if not all(math.isfinite(v) for v in (*values.values(), fees)):
        raise ValidationError(f"a signal's result needs finite numbers, got {values} fees {fees}")


def information_coefficient(strengths: Sequence[float], returns: Sequence[float]) -> float:
    """Spearman rank correlation of signal strengths and forward returns: the Pearson
    correlation of their ranks, ties ranked by their average. NaN with fewer than
    `MIN_IC_SAMPLES` pairs or when either side is constant (no ranking to correlate)."""
    if len(strengths) != len(returns):
        raise ValidationError(f"{len(strengths)} strengths for {len(returns)} returns")
    x = pd.Series(strengths, dtype="float64").rank().to_numpy()
    y = pd.Series(returns, dtype="float64").rank().to_numpy()
    if len(x) < MIN_IC_SAMPLES or np.isnan(x).any() or np.isnan(y).any():
        return math.nan
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


@dataclass(frozen=True)
class Scores:
    """A strategy's win rate and information coefficient over some outcomes."""

    wins: WinRate
    """Wins out of the outcomes (the cache's tracker value)."""
    ic: float
    """NaN when it cannot be computed (see `information_coefficient`)."""


def scores(strengths: Sequence[float], returns: Sequence[float], pnls: Sequence[float]) -> Scores:
    """Win rate (P&L > 0) and IC of one strategy's outcomes, given in the same order."""
    if len(pnls) != len(strengths):
        raise ValidationError(f"{len(pnls)} P&Ls for {len(strengths)} strengths")
    return Scores(
        wins=WinRate(wins=sum(1 for p in pnls if p > 0), total=len(pnls)),
        ic=information_coefficient(strengths, returns),
    )


def rolling_scores(outcomes: pd.DataFrame, window: int) -> pd.DataFrame:
    """Win rate and IC per strategy over time: for each outcome (columns `strategy`, `signal_at`,
    `strength`, `forward_return`, `pnl`), the scores of its strategy's latest `window` outcomes
    up to it, in signal order. Columns: strategy, signal_at, samples, win_rate, ic."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValidationError(f"window must be a positive number of outcomes, got {window!r}")
    missing = {"strategy", "signal_at", "strength", "forward_return", "pnl"} - set(outcomes)
    if missing:
        raise ValidationError(f"outcomes lack columns {sorted(missing)}")
    rows = []
    for strategy, group in outcomes.sort_values("signal_at").groupby("strategy", sort=True):
        strength = group["strength"].to_list()
        forward = group["forward_return"].to_list()
        pnl = group["pnl"].to_list()
        for end, at in enumerate(group["signal_at"], start=1):
            start = max(0, end - window)
            s = scores(strength[start:end], forward[start:end], pnl[start:end])
            rows.append((strategy, at, s.wins.total, s.wins.rate, s.ic))
    return pd.DataFrame(rows, columns=["strategy", "signal_at", "samples", "win_rate", "ic"])
