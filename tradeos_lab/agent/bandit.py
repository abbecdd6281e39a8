"""The learning loop: the Signal Modifier's ensemble weights adjusted by Thompson sampling.

Why Thompson sampling rather than EXP3: the strategies' payoffs are noisy but roughly stationary
over a week of trades and there are few of them (tens, not thousands), which is where a Bayesian
posterior shines: a strategy with five trades keeps a wide posterior and is neither crowned nor
buried by luck, while EXP3 is built for adversarial payoffs and needs many rounds and a tuned
learning rate before its weights mean anything. Each strategy (arm) gets a Beta posterior on its
win probability from its closed trades (TCA's signal horizons at the scoring horizon); a draw's
expected P&L per trade is `p * average win - (1 - p) * average loss` from the realised P&L, and
an arm's target share is how often it has the best draw. The draws are seeded from the evidence,
so the same evidence always gives the same target.

Guardrails, from the active profile's `learning` rules: no strategy's weight moves before it has
`min_closed_trades` closed trades; no share moves by more than `max_shift` in one update; no share
falls below `weight_floor`. The result is the closest weights to the target within those bounds
(a projection onto the box, found by bisection). Shares sum to 1; the cache holds them scaled to
a mean of 1, so a strategy without a weight (the modifier's default 1.0) counts as average.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from tradeos_lab.errors import ValidationError

if TYPE_CHECKING:
    from tradeos_lab.agent.rules import LearningRule
    from tradeos_lab.stores.records import SignalHorizon

METHOD: Final = "thompson"
DRAWS: Final = 4_000
_TOL: Final = 1e-9


@dataclass(frozen=True)
class ArmEvidence:
    """One strategy's closed trades: how many, how many won, and their realised P&L."""

    strategy: str
    trades: int
    wins: int
    pnl: float
    avg_win: float
    avg_loss: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "trades": self.trades,
            "wins": self.wins,
            "pnl": self.pnl,
            "avg_win": self.avg_win,
            "avg_loss": self.avg_loss,
        }


@dataclass(frozen=True)
class Adjustment:
    """One update: the cache weights before and after (mean 1), the target shares the bandit
    wanted, the evidence, and whether anything moved (with the reason when not)."""

    before: dict[str, float]
    after: dict[str, float]
    target: dict[str, float]
    evidence: dict[str, ArmEvidence]
    applied: bool
    reason: str

    def evidence_record(self) -> dict[str, Any]:
        return {
            "arms": {s: e.as_dict() for s, e in sorted(self.evidence.items())},
            "target_shares": self.target,
            "reason": self.reason,
        }


def evidence_from(horizons: Iterable[SignalHorizon]) -> dict[str, ArmEvidence]:
    """Per strategy, its closed (done) horizons' trades, wins (P&L > 0) and P&L."""
    pnls: dict[str, list[float]] = {}
    for h in horizons:
        if h.status == "done" and h.pnl is not None:
            pnls.setdefault(h.strategy, []).append(float(h.pnl))
    out = {}
    for strategy, values in sorted(pnls.items()):
        wins = [v for v in values if v > 0]
        losses = [-v for v in values if v <= 0]
        out[strategy] = ArmEvidence(
            strategy=strategy,
            trades=len(values),
            wins=len(wins),
            pnl=float(sum(values)),
            avg_win=float(np.mean(wins)) if wins else 0.0,
            avg_loss=float(np.mean(losses)) if losses else 0.0,
        )
    return out


def thompson_target(evidence: Mapping[str, ArmEvidence], *, draws: int = DRAWS) -> dict[str, float]:
    """Each arm's share of draws in which its sampled expected P&L per trade is the best."""
    if not evidence:
        return {}
    names = sorted(evidence)
    seed = int.from_bytes(
        hashlib.sha256(
            json.dumps({s: evidence[s].as_dict() for s in names}, sort_keys=True).encode()
        ).digest()[:8],
        "big",
    )
    rng = np.random.default_rng(seed)
    samples = np.empty((len(names), draws))
    for i, s in enumerate(names):
        e = evidence[s]
        p = rng.beta(1 + e.wins, 1 + e.trades - e.wins, draws)
        samples[i] = p * e.avg_win - (1 - p) * e.avg_loss
    best = np.bincount(samples.argmax(axis=0), minlength=len(names))
    return {s: float(best[i] / draws) for i, s in enumerate(names)}


def shares(weights: Mapping[str, float], names: Iterable[str]) -> dict[str, float]:
    """Weights over `names` as shares summing to 1 (a missing name weighs the default 1.0)."""
    raw = {s: float(weights.get(s, 1.0)) for s in names}
    total = sum(raw.values())
    if total <= 0:
        raise ValidationError("ensemble weights must be positive")
    return {s: v / total for s, v in raw.items()}


def guarded(
    before: Mapping[str, float],
    target: Mapping[str, float],
    eligible: Iterable[str],
    *,
    max_shift: float,
    floor: float,
) -> dict[str, float] | None:
    """The shares closest to `target` with every eligible share within `max_shift` of its
    `before` and at least `floor`, the others unchanged, summing to 1; None when the bounds
    leave no room (the weights stay as they are)."""
    names = sorted(before)
    ok = set(eligible) & set(names)
    if not (0 < max_shift <= 1) or not (0 <= floor < 1):
        raise ValidationError("max_shift must be in (0, 1] and weight_floor in [0, 1)")
    lo = np.array(
        [
            min(max(before[s] - max_shift, floor), before[s] + max_shift) if s in ok else before[s]
            for s in names
        ]
    )
    hi = np.array([before[s] + max_shift if s in ok else before[s] for s in names])
    lo = np.minimum(lo, hi)
    if lo.sum() > 1 + _TOL or hi.sum() < 1 - _TOL:
        return None
    t = np.array([target.get(s, before[s]) for s in names])
    # a(lam) = clip(t + lam, lo, hi) grows with lam; find the lam where it sums to 1.
    left, right = -2.0, 2.0
    for _ in range(200):
        mid = (left + right) / 2
        if np.clip(t + mid, lo, hi).sum() < 1:
            left = mid
        else:
            right = mid
    after = np.clip(t + (left + right) / 2, lo, hi)
    return {s: float(v) for s, v in zip(names, after, strict=True)}


def adjust(
    weights: Mapping[str, float],
    evidence: Mapping[str, ArmEvidence],
    rules: LearningRule,
) -> Adjustment:
    """One learning step from the cache `weights` (mean-1 scale; empty: equal) and the evidence."""
    names = sorted(set(weights) | set(evidence))
    before_w = {s: float(weights.get(s, 1.0)) for s in names}
    if not names:
        return Adjustment({}, {}, {}, dict(evidence), False, "no strategy has traded")
    if rules.weight_floor * len(names) > 1:
        raise ValidationError(
            f"weight_floor {rules.weight_floor:g} is too high for {len(names)} strategies"
        )
    eligible = {s for s, e in evidence.items() if e.trades >= rules.min_closed_trades}
    before = shares(before_w, names)
    target_arms = thompson_target({s: evidence[s] for s in eligible})
    if not eligible:
        return Adjustment(
            before_w,
            before_w,
            {},
            dict(evidence),
            False,
            f"no strategy has {rules.min_closed_trades} closed trades yet",
        )
    # The eligible strategies share what they hold now, split by the bandit's target.
    pool = sum(before[s] for s in eligible)
    target = {s: (target_arms[s] * pool if s in eligible else before[s]) for s in names}
    after = guarded(before, target, eligible, max_shift=rules.max_shift, floor=rules.weight_floor)
    if after is None:
        return Adjustment(
            before_w,
            before_w,
            target,
            dict(evidence),
            False,
            "the floor and shift bounds leave no room to move",
        )
    after_w = {s: v * len(names) for s, v in after.items()}
    moved = any(not math.isclose(after_w[s], before_w[s], abs_tol=1e-9) for s in names)
    reason = (
        f"thompson sampling over {len(eligible)} strategy(ies) with >= "
        f"{rules.min_closed_trades} closed trades; shift <= {rules.max_shift:g}, "
        f"floor {rules.weight_floor:g}"
    )
    return Adjustment(before_w, after_w, target, dict(evidence), moved, reason)
