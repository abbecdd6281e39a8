"""Live-tunable config: the agent's proposals (pending approval when the profile says so, each
applied change with who, when, old and new value) and the watcher that re-reads config when
its version moves."""

from __future__ import annotations

import pytest

from tradeos_lab.agent.config import CONFIG_CHANGED, CONFIG_PROPOSED, ConfigWatcher
from tradeos_lab.agent.policy import active_rules, propose
from tradeos_lab.contracts import new_message
from tradeos_lab.errors import ValidationError
from tradeos_lab.lab import Lab


def test_a_proposal_waits_for_approval_when_the_profile_asks_and_is_then_applied(
    lab: Lab,
) -> None:
    records = lab.records
    assert active_rules(records).rules.require_approval  # the default
    records.set_config("hero_signals", ["sma_cross"], changed_by="user:ops", reason="start")
    proposal, audit = propose(records, "hero_signals", ["sma_cross", "macd_trend"], reason="IC")
    assert proposal.status == "pending" and audit.action == CONFIG_PROPOSED
    assert records.get_config("hero_signals") == ["sma_cross"]
    decided = records.decide_config(proposal.id, approve=True, decided_by="user:ops", reason="ok")
    assert decided.status == "applied" and decided.decided_by == "user:ops"
    assert records.get_config("hero_signals") == ["sma_cross", "macd_trend"]
    change = records.config_history("hero_signals")[-1]
    assert (change.old_value, change.new_value, change.changed_by) == (
        ["sma_cross"],
        ["sma_cross", "macd_trend"],
        "user:ops",
    )
    with pytest.raises(ValidationError, match="already applied"):
        records.decide_config(proposal.id, approve=False, decided_by="user:ops", reason="late")


def test_a_rejected_proposal_changes_nothing(lab: Lab) -> None:
    proposal, _ = propose(lab.records, "exit_cooldown_s", 120, reason="churn")
    rejected = lab.records.decide_config(
        proposal.id, approve=False, decided_by="user:ops", reason="no"
    )
    assert rejected.status == "rejected" and lab.records.get_config("exit_cooldown_s") is None


def test_without_approval_a_proposal_applies_at_once_and_is_announced(lab: Lab) -> None:
    records = lab.records
    active_rules(records)  # seeds the profiles
    version = records.save_profile_version(
        "Balanced", {"agent_rules": {"require_approval": False}}, created_by="user:t", reason="t"
    )
    records.activate_profile("Balanced", version.version, activated_by="user:t")
    proposal, audit = propose(records, "max_order_notional", 50_000, reason="smaller orders")
    assert proposal.status == "applied" and audit.action == CONFIG_CHANGED
    assert isinstance(audit.new_value, dict)
    assert audit.new_value["version"] == records.config_version()
    change = records.config_history("max_order_notional")[-1]
    assert change.changed_by == "agent" and change.old_value is None
    assert change.new_value == 50_000


def test_the_watcher_rereads_only_when_the_version_moves(lab: Lab) -> None:
    records = lab.records
    now = [0.0]
    watcher = ConfigWatcher(records, max_age_s=60, clock=lambda: now[0])
    assert watcher.get("exit_cooldown_s", 30) == 30
    records.set_config("exit_cooldown_s", 90, changed_by="user:ops", reason="calmer")
    assert watcher.get("exit_cooldown_s", 30) == 30  # no announcement, not due yet
    payload = {
        "actor": "user:ops",
        "action": CONFIG_CHANGED,
        "target": "config:exit_cooldown_s",
        "old_value": None,
        "new_value": {"key": "exit_cooldown_s"},
        "reason": "calmer",
    }
    from tradeos_lab.contracts import Audit

    assert watcher.note(new_message(Audit(**payload), producer="operator"))
    assert watcher.get("exit_cooldown_s", 30) == 90 and watcher.changed == {"exit_cooldown_s"}
    records.set_config("exit_cooldown_s", 45, changed_by="user:ops", reason="again")
    now[0] = 61.0  # due again without an announcement
    assert watcher.refresh() and watcher.get("exit_cooldown_s") == 45
    assert not watcher.refresh()
