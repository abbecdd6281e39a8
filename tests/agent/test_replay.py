"""Counterfactuals checked by hand: recent trades under new weights, yesterday's intents under
a candidate profile; versioned, effective-dated profiles in the records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from agent_support import intent_message

from tradeos_lab.agent.replay import (
    Limits,
    ReplayIntent,
    daily,
    intents_to_replay,
    profile_replay,
    weight_replay,
)
from tradeos_lab.errors import ValidationError
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.services.signal_modifier import ProfileSource

DAY = datetime(2026, 12, 1, tzinfo=UTC)
BALANCED = Limits(
    max_position_pct=10.0,
    max_leverage=1.0,
    risk_per_trade_pct=1.0,
    max_open_positions=10,
    min_signal_confidence=0.5,
)


def trade(strategy: str, pnl: float, hours: float) -> Any:
    return SimpleNamespace(
        status="done",
        pnl=pnl,
        strategy=strategy,
        symbol="BTC-USD",
        signal_at=DAY + timedelta(hours=hours),
    )


def test_weight_replay_scales_each_trade_by_its_strategy_weight() -> None:
    trades = [trade("a", 10.0, 1), trade("b", -4.0, 2), trade("a", -2.0, 30), trade("c", 5.0, 31)]
    replay = weight_replay(trades, before={"a": 1.0, "b": 1.0}, after={"a": 1.5, "b": 0.5})
    # a: 10 x 1.5 = 15 and -2 x 1.5 = -3; b: -4 x 0.5 = -2; c has no weight: 1.0 -> 1.0.
    assert replay["counterfactual_pnl"].tolist() == [15.0, -2.0, -3.0, 5.0]
    per_day = daily(replay)
    assert per_day["pnl"].tolist() == [6.0, 3.0]
    assert per_day["counterfactual_pnl"].tolist() == [13.0, 2.0]


def intent(
    i: int, symbol: str, side: str, quantity: float, price: float, **kw: Any
) -> ReplayIntent:
    return ReplayIntent(
        intent_id=f"i-{i}",
        strategy="sma_cross",
        symbol=symbol,
        side=side,
        quantity=quantity,
        reduce_only=kw.get("reduce_only", False),
        price=price,
        confidence=kw.get("confidence", 1.0),
        sized_under=BALANCED,
    )


def test_a_candidate_profile_denies_and_resizes_by_hand() -> None:
    candidate = Limits(
        max_position_pct=5.0,
        max_leverage=0.12,
        risk_per_trade_pct=1.0,
        max_open_positions=2,
        min_signal_confidence=0.7,
    )
    intents = [
        # 100 BTC-USD at 100 = 10% of 100k: x0.5 (5% / 10%) -> 50.
        intent(1, "BTC-USD", "buy", 100, 100.0),
        # confidence 0.6 < 0.7: denied.
        intent(2, "ETH-USD", "buy", 10, 1_000.0, confidence=0.6),
        # 10 ETH at 1000 -> x0.5 = 5 (5k): gross 5k + 5k = 10k <= 12k: kept at 5.
        intent(3, "ETH-USD", "buy", 10, 1_000.0),
        # a third symbol: two positions open already: denied.
        intent(4, "SOL-USD", "buy", 10, 10.0),
        # 40 more BTC x0.5 = 20; position limit 5k / 100 = 50 held: no room: denied.
        intent(5, "BTC-USD", "buy", 40, 100.0),
        # selling down BTC: reducing, unchanged.
        intent(6, "BTC-USD", "sell", 30, 100.0, reduce_only=True),
        # 40 BTC x0.5 = 20; room 50 - 20 = 30 by position; gross room (12k - 5k) / 100 - 20 = 50.
        intent(7, "BTC-USD", "buy", 40, 100.0),
    ]
    out = profile_replay(intents, candidate, equity=100_000)
    assert out["verdict"].tolist() == [
        "resized",
        "denied",
        "resized",
        "denied",
        "denied",
        "kept",
        "resized",
    ]
    assert out["candidate_quantity"].tolist() == [50.0, 0.0, 5.0, 0.0, 0.0, 30.0, 20.0]
    assert out["rule"].tolist()[1] == "min_signal_confidence"
    assert out["rule"].tolist()[3] == "max_open_positions"
    assert out["rule"].tolist()[4] == "position_limit"


def test_a_profile_replay_needs_a_positive_equity() -> None:
    with pytest.raises(ValidationError, match="equity"):
        profile_replay([], BALANCED, equity=0)


def test_profile_versions_are_effective_dated_and_a_candidate_replays_recorded_intents(
    lab: Lab,
) -> None:
    records = lab.records
    source = ProfileSource(records)
    source.get()  # seeds the default profiles
    candidate = records.save_profile_version(
        "Balanced",
        {"max_position_pct": 5.0, "agent_rules": {"require_approval": False}},
        created_by="user:test",
        reason="tighter",
    )
    assert candidate.version == 1 and candidate.effective_from is None
    assert records.profile("Balanced").max_position_pct == 10.0  # not live yet
    now = datetime.now(UTC)
    message = intent_message("BTC-USD", now - timedelta(hours=3), quantity=2.0)
    records.record_intent(message)
    replayed = intents_to_replay(records, now - timedelta(days=1), now)
    assert [(r.intent_id, r.quantity, r.sized_under.max_position_pct) for r in replayed] == [
        (message.message_id, 2.0, 10.0)
    ]
    frame = profile_replay(replayed, Limits.of(candidate), equity=100_000)
    assert frame.loc[0, "verdict"] == "resized" and frame.loc[0, "candidate_quantity"] == 1.0
    active = records.activate_profile("Balanced", 1, activated_by="user:test")
    assert active.effective_from is not None
    live = records.profile("Balanced")
    assert live.max_position_pct == 5.0 and live.agent_rules == {"require_approval": False}
    assert live.updated_at == active.effective_from
    fresh = ProfileSource(records).get()
    assert fresh.max_position_pct == 5.0
    assert isinstance(frame, pd.DataFrame)
