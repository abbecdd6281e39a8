"""The named rules as pure functions: the facts in, None or a reason out."""

from __future__ import annotations

from dataclasses import replace

from tradeos_lab.contracts import Side
from tradeos_lab.pipeline.services.rules import (
    RULES,
    OrderCheck,
    first_failure,
    gross_exposure,
    open_positions,
    position_limit,
)
from tradeos_lab.tiers.flags import BreakerState, Decision, RateDecision

PRICE = 101.0
TARGET = 10_000 / PRICE  # the largest position at Balanced's 10% of 100,000


def _check(**changes: object) -> OrderCheck:
    base = OrderCheck(
        strategy="flip",
        symbol="BTC-USD",
        side=Side.BUY,
        quantity=1.0,
        price=PRICE,
        now=1_700_000_000.0,
        reduces=False,
        kill=Decision(True, None, "no kill switch applies"),
        breaker=BreakerState.CLOSED,
        equity=100_000.0,
        day_start_equity=100_000.0,
        max_daily_loss_pct=2.0,
        position=0.0,
        max_position_pct=10.0,
        other_exposure=0.0,
        max_leverage=2.0,
        max_order_notional=50_000.0,
        last_exit_at=None,
        exit_cooldown_s=30.0,
        market_open=True,
        rate=RateDecision(True, 10, 0.0),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_flip_sized_exactly_at_the_position_limit_passes_despite_float_error() -> None:
    held = 98.5  # long; flipping to the largest short sells held + TARGET
    flip = _check(side=Side.SELL, quantity=held + TARGET, position=held)
    assert abs(flip.position_after) * PRICE > 10_000  # by float error only
    assert position_limit(flip) is None
    assert gross_exposure(flip) is None
    assert position_limit(replace(flip, quantity=held + TARGET * 1.001)) is not None


def test_an_order_within_every_limit_passes_every_rule() -> None:
    assert first_failure(_check()) is None
    assert [name for name, _ in RULES][-1] == "rate_limit"  # the one with an effect, last


def test_reducing_orders_pass_the_exposure_rules_even_past_the_limits() -> None:
    over = _check(side=Side.SELL, quantity=1.0, position=200.0, reduces=True)
    assert position_limit(over) is None and gross_exposure(over) is None
    assert position_limit(replace(over, reduces=False)) is not None


def test_a_position_left_as_float_dust_by_a_round_trip_reads_flat() -> None:
    from datetime import UTC, datetime

    from tradeos_lab.contracts import ModifiedSignal
    from tradeos_lab.pipeline.services.feasibility import _order
    from tradeos_lab.pipeline.services.signal_modifier import ActiveProfile

    profile = ActiveProfile(
        name="Balanced",
        version="v1",
        max_position_pct=10.0,
        max_daily_loss_pct=2.0,
        max_leverage=2.0,
        risk_per_trade_pct=0.5,
        max_open_positions=10,
        min_signal_confidence=0.6,
        reference_risk_per_trade_pct=0.5,
    )
    long = ModifiedSignal(
        raw_signal_id="01900000-0000-7000-8000-000000000000",
        strategy="flip",
        symbol="BTC-USD",
        timeframe="1m",
        ts=datetime(2024, 1, 2, tzinfo=UTC),
        direction="long",
        raw_strength=1.0,
        adjusted_strength=1.0,
        confidence=0.8,
        modifiers=[],
    )
    # opened at one equity, closed at another an ulp apart: 1.4e-14 is left, not a long position
    dust = TARGET * (1 + 2**-52) - TARGET
    assert 0 < dust < 1e-12
    side, quantity = _order(long, dust, PRICE, 100_000.0, profile)  # type: ignore[misc]
    assert side is Side.BUY
    assert abs(quantity - TARGET) < 1e-9


def test_open_positions_holds_back_only_an_order_that_opens_one_more() -> None:
    full = _check(open_positions=5, max_open_positions=5)
    assert open_positions(full) is not None
    assert open_positions(replace(full, position=1.0)) is None  # adds to an open position
    assert open_positions(replace(full, position=1.0, side=Side.SELL)) is None  # closes it
    assert open_positions(replace(full, open_positions=4)) is None
    assert open_positions(replace(full, max_open_positions=0)) is None  # no limit
    assert open_positions(replace(full, position=1e-12)) is not None  # dust is flat
