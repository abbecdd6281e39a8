"""The active profile's agent rules, and the agent's config proposals under them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tradeos_lab.agent.bandit import METHOD, Adjustment, adjust, evidence_from
from tradeos_lab.agent.config import announcement
from tradeos_lab.agent.replay import recent_trades
from tradeos_lab.agent.rules import AgentRules
from tradeos_lab.pipeline.services.signal_modifier import (
    ACTIVE_PROFILE_KEY,
    REFERENCE_PROFILE,
    ensure_default_profiles,
)

if TYPE_CHECKING:
    from tradeos_lab.contracts import Audit
    from tradeos_lab.lab import Lab
    from tradeos_lab.stores.records import ConfigProposal, RecordsStore

#: Who the agent's config proposals and weight changes are recorded as.
AGENT_ACTOR = "agent"


@dataclass(frozen=True)
class ActiveRules:
    """The active profile's name, its agent rules and its drawdown limit."""

    profile: str
    rules: AgentRules
    max_drawdown_pct: float


def active_rules(records: RecordsStore) -> ActiveRules:
    """The agent rules of the active policy profile (the defaults where it sets none)."""
    profiles = {p.name: p for p in records.profiles()}
    if REFERENCE_PROFILE not in profiles:
        ensure_default_profiles(records)
        profiles = {p.name: p for p in records.profiles()}
    name = str(records.get_config(ACTIVE_PROFILE_KEY, REFERENCE_PROFILE))
    chosen = profiles.get(name) or profiles[REFERENCE_PROFILE]
    return ActiveRules(chosen.name, AgentRules.parse(chosen.agent_rules), chosen.max_drawdown_pct)


def propose(
    records: RecordsStore, key: str, value: Any, *, reason: str, actor: str = AGENT_ACTOR
) -> tuple[ConfigProposal, Audit]:
    """Propose a config change under the active profile: applied now, or pending an operator
    when its rules `require_approval`; returns the proposal and the `audit` announcing it."""
    approval = active_rules(records).rules.require_approval
    proposal = records.propose_config(
        key, value, proposed_by=actor, reason=reason, approval=approval
    )
    return proposal, announcement(records, proposal, actor=actor)


def learn(lab: Lab, *, now: datetime, rules: AgentRules | None = None) -> Adjustment:
    """One learning-loop step: evidence from the records, the bandit's guarded adjustment, kept
    in the records (whenever there was evidence, moved or held) and, when it moved anything,
    written to the cache the modifier reads."""
    learning = (rules or active_rules(lab.records).rules).learning
    trades = recent_trades(lab.records, days=learning.lookback_days, now=now)
    before = lab.cache.get_signal_weights()
    evidence = evidence_from(trades)
    step = adjust(before, evidence, learning)
    if not evidence:
        return step  # nothing traded: nothing to learn from, nothing to keep
    lab.records.record_weight_adjustment(
        method=METHOD,
        before=step.before,
        after=step.after,
        evidence=step.evidence_record(),
        applied=step.applied,
        at=now,
    )
    if step.applied:
        lab.cache.set_signal_weights(step.after)
    return step
