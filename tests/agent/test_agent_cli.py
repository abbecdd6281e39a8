"""`tradeos-lab agent ...` against a lab on the machine's servers: proposals approved and
rejected from the terminal, each applied change announced on the `audit` stream, and a
candidate profile replayed over a day's intents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent_support import intent_message
from click.testing import CliRunner, Result

from tradeos_lab.agent.config import CONFIG_CHANGED
from tradeos_lab.agent.policy import propose
from tradeos_lab.cli import cli
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab


def run(lab: Lab, *args: str, code: int = 0) -> Result:
    s = lab.settings
    env = {
        "TRADEOS_NAMESPACE": s.namespace,
        "TRADEOS_BUS_URL": str(s.bus_url),
        "TRADEOS_CACHE_URL": str(s.cache_url),
        "TRADEOS_FLAGS_URL": str(s.flags_url),
        "TRADEOS_RECORDS_URL": str(s.records_url),
        "TRADEOS_LAKE_URL": str(s.lake_url),
        "TRADEOS_DATA_DIR": str(s.data_dir),
        "COLUMNS": "200",  # rich tables wide enough to read whole
    }
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def test_an_approved_proposal_is_applied_and_announced(lab: Lab) -> None:
    proposal, _ = propose(lab.records, "exit_cooldown_s", 120, reason="churn")
    out = run(lab, "agent", "proposals", "--status", "pending").output
    assert "exit_cooldown_s" in out and "pending" in out
    run(lab, "agent", "approve", str(proposal.id), "--actor", "user:ops", "--reason", "fine")
    assert lab.records.get_config("exit_cooldown_s") == 120
    audit = lab.bus.inspect.read(Stream.AUDIT)
    changed = audit[audit["payload.action"] == CONFIG_CHANGED]
    assert list(zip(changed["payload.actor"], changed["payload.target"], strict=True)) == [
        ("user:ops", "config:exit_cooldown_s")
    ]


def test_a_rejected_proposal_leaves_the_config(lab: Lab) -> None:
    proposal, _ = propose(lab.records, "exit_cooldown_s", 120, reason="churn")
    out = run(lab, "agent", "reject", str(proposal.id), "--actor", "user:ops", "--reason", "no")
    assert "rejected" in out.output and lab.records.get_config("exit_cooldown_s") is None


def test_replay_profile_lists_what_the_candidate_would_have_denied(lab: Lab) -> None:
    records = lab.records
    propose(records, "exit_cooldown_s", 60, reason="seed the profiles")
    version = records.save_profile_version(
        "Balanced", {"max_open_positions": 1}, created_by="user:t", reason="fewer positions"
    )
    yesterday = datetime.now(UTC).replace(hour=12, minute=0) - timedelta(days=1)
    for i, symbol in enumerate(["BTC-USD", "ETH-USD"]):
        records.record_intent(intent_message(symbol, yesterday + timedelta(minutes=i)))
    out = run(lab, "agent", "replay-profile", "Balanced", str(version.version)).output
    assert "max_open_positions" in out and "denied" in out and "kept" in out


def test_replay_weights_shows_the_recent_trades_under_the_latest_weights(lab: Lab) -> None:
    records = lab.records
    at = datetime.now(UTC) - timedelta(hours=2)
    for i, (strategy, pnl) in enumerate([("sma_cross", 10.0), ("macd_trend", -4.0)]):
        records.open_signal_horizons(
            signal_id=f"s-{i}",
            horizons=[5],
            strategy=strategy,
            symbol="BTC-USD",
            timeframe="1m",
            signal_at=at,
            strength=1.0,
            side="buy",
            quantity=1.0,
            avg_price=100.0,
            fees=0.0,
            arrival_price=100.0,
        )
        records.close_signal_horizon(
            f"s-{i}", 5, exit_at=at, exit_price=100.0 + pnl, forward_return=pnl / 100, pnl=pnl
        )
    records.record_weight_adjustment(
        method="thompson",
        before={"sma_cross": 1.0, "macd_trend": 1.0},
        after={"sma_cross": 1.5, "macd_trend": 0.5},
        evidence={},
        applied=True,
    )
    out = run(lab, "agent", "replay-weights", "--days", "1").output
    # 10 x 1.5 - 4 x 0.5 = 13 against 6
    assert "│ 6.0 " in out and "│ 13.0 " in out
