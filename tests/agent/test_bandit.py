"""The learning loop: Thompson sampling's target and the guardrails on every update (minimum
closed trades, maximum shift, weight floor), each adjustment kept in the records and written to
the cache the Signal Modifier reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeos_lab.agent.bandit import ArmEvidence, adjust, guarded, shares, thompson_target
from tradeos_lab.agent.policy import learn
from tradeos_lab.agent.rules import LearningRule
from tradeos_lab.errors import ValidationError
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.signal_modifier import SignalModifier

NAMES = ["a", "b", "c", "d"]


def arm(
    name: str, trades: int, wins: int, avg_win: float = 10.0, avg_loss: float = 10.0
) -> ArmEvidence:
    pnl = wins * avg_win - (trades - wins) * avg_loss
    return ArmEvidence(name, trades, wins, pnl, avg_win if wins else 0.0, avg_loss)


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, float], dict[str, float], set[str], float, float]:
    n = draw(st.integers(2, 4))
    names = NAMES[:n]
    floor = draw(st.floats(0.0, 0.9 / n))
    raw = [draw(st.floats(0.01, 10.0)) for _ in names]
    before = shares(dict(zip(names, raw, strict=True)), names)
    t = [draw(st.floats(0.0, 1.0)) for _ in names]
    total = sum(t) or 1.0
    target = {s: v / total for s, v in zip(names, t, strict=True)}
    eligible = set(draw(st.lists(st.sampled_from(names), unique=True)))
    return before, target, eligible, draw(st.floats(0.001, 1.0)), floor


@settings(max_examples=300, deadline=None)
@given(cases())
def test_guarded_weights_keep_every_bound(
    case: tuple[dict[str, float], dict[str, float], set[str], float, float],
) -> None:
    before, target, eligible, max_shift, floor = case
    after = guarded(before, target, eligible, max_shift=max_shift, floor=floor)
    if after is None:
        return
    assert sum(after.values()) == pytest.approx(1.0, abs=1e-9)
    for s, v in after.items():
        assert abs(v - before[s]) <= max_shift + 1e-9
        if s not in eligible:
            assert v == before[s]
        elif before[s] >= floor:
            assert v >= floor - 1e-9


def test_no_weight_moves_before_the_minimum_of_closed_trades() -> None:
    rules = LearningRule(min_closed_trades=20)
    step = adjust({}, {"a": arm("a", 19, 19), "b": arm("b", 19, 0)}, rules)
    assert not step.applied and step.after == step.before == {"a": 1.0, "b": 1.0}
    assert "20 closed trades" in step.reason


def test_only_the_strategies_with_enough_trades_move() -> None:
    rules = LearningRule(min_closed_trades=10, max_shift=0.1, weight_floor=0.05)
    evidence = {"a": arm("a", 40, 30), "b": arm("b", 40, 10), "c": arm("c", 5, 5)}
    step = adjust({}, evidence, rules)
    assert step.applied
    assert step.after["c"] == pytest.approx(1.0)  # too few trades: its weight stays
    # The winner gains the most one update allows, the loser gives it up (shares of 1/3 each).
    assert step.after["a"] == pytest.approx((1 / 3 + 0.1) * 3)
    assert step.after["b"] == pytest.approx((1 / 3 - 0.1) * 3)


def test_the_floor_holds_a_losing_strategy_up() -> None:
    rules = LearningRule(min_closed_trades=10, max_shift=1.0, weight_floor=0.2)
    step = adjust({}, {"a": arm("a", 50, 45), "b": arm("b", 50, 2)}, rules)
    assert step.after["b"] / sum(step.after.values()) == pytest.approx(0.2)


def test_a_floor_too_high_for_the_strategies_is_refused() -> None:
    with pytest.raises(ValidationError, match="weight_floor"):
        adjust({}, {s: arm(s, 30, 15) for s in NAMES}, LearningRule(weight_floor=0.3))


def test_the_same_evidence_gives_the_same_target_and_the_better_arm_wins_it() -> None:
    evidence = {"a": arm("a", 60, 40), "b": arm("b", 60, 20)}
    first = thompson_target(evidence)
    assert first == thompson_target(evidence)
    assert first["a"] > 0.95 and sum(first.values()) == pytest.approx(1.0)


def test_a_learning_step_is_recorded_and_reaches_the_modifier_through_the_cache(
    lab: Lab,
) -> None:
    now = datetime.now(UTC)
    records = lab.records
    for i in range(24):
        strategy = "sma_cross" if i % 2 else "rsi_reversion"
        won = (i % 2 == 1) == (i % 6 != 5)  # sma_cross wins most, rsi_reversion loses most
        signal_id = f"sig-{i:03d}"
        records.open_signal_horizons(
            signal_id=signal_id,
            horizons=[5],
            strategy=strategy,
            symbol="BTC-USD",
            timeframe="1m",
            signal_at=now - timedelta(hours=24 - i),
            strength=1.0,
            side="buy",
            quantity=1.0,
            avg_price=100.0,
            fees=0.1,
            arrival_price=100.0,
        )
        records.close_signal_horizon(
            signal_id,
            5,
            exit_at=now - timedelta(hours=23 - i),
            exit_price=101.0 if won else 99.0,
            forward_return=0.01 if won else -0.01,
            pnl=1.0 if won else -1.0,
        )
    rules = LearningRule(min_closed_trades=10, max_shift=0.1, weight_floor=0.05)
    from tradeos_lab.agent.rules import AgentRules

    step = learn(lab, now=now, rules=AgentRules(learning=rules))
    assert step.applied
    assert step.after["sma_cross"] == pytest.approx(1.2)
    assert step.after["rsi_reversion"] == pytest.approx(0.8)
    kept = records.weight_adjustments()
    assert len(kept) == 1 and kept[0].applied and kept[0].method == "thompson"
    assert kept[0].before == {"rsi_reversion": 1.0, "sma_cross": 1.0}
    assert kept[0].after == pytest.approx(step.after)
    assert kept[0].evidence["arms"]["sma_cross"]["trades"] == 12
    assert lab.cache.get_signal_weights() == pytest.approx(step.after)
    modifier = SignalModifier(ServiceContext(lab=lab, settings=lab.settings, instance="t"))
    assert modifier.weights.get() == pytest.approx(step.after)
