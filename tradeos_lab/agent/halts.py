"""The agent's kill switches: engaged and released on its rules' verdicts, never anyone else's.

Several rules may want the same switch (the drawdown and the breaker rules both halt the whole
account), and one source holds one switch per scope and target, so a switch is held by the set of
rules triggering it: engaged with the strictest mode and the longest expiry among them, and
cleared only when the last one releases it. What the agent guarantees:

- it clears only the switch it wrote itself (its actor and the instant it was engaged match what
  it holds), never a manual or reconciliation switch (the `agent` source cannot touch those) nor
  an agent-source switch someone else wrote;
- a manual switch on the same scope and target outranks it: the agent defers (audited) and
  writes nothing there while the operator's switch stands;
- an operator who clears the agent's switch early is obeyed: the rules holding it do not engage
  it again until they have released once (the condition cleared) and trigger anew.

Every engagement, release, deferral and override is returned as an audit entry carrying the rule
and the figures that decided it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from tradeos_lab.agent.rules import Verdict
from tradeos_lab.tiers.flags import KillMode, KillScope, KillSource, KillSwitch, KillSwitches
from tradeos_lab.tiers.flags.plumbing import server_time

#: The actor the agent's switches are engaged under.
AGENT_ACTOR: Final = "agent"


@dataclass(frozen=True)
class AgentAction:
    """One audited decision of the agent over a switch."""

    action: str
    rule: str
    target: str
    reason: str
    figures: dict[str, Any]
    switch: dict[str, Any] | None = None


@dataclass
class _Hold:
    """The rules holding one switch, and the switch as the agent last wrote it."""

    rules: dict[str, Verdict] = field(default_factory=dict)
    written: KillSwitch | None = None
    #: Rules whose switch an operator cleared: not engaged again until they release once.
    overridden: set[str] = field(default_factory=set)
    #: Rules deferring to a manual switch (audited once per episode).
    deferred: set[str] = field(default_factory=set)


def _where(scope: KillScope, target: str) -> str:
    return f"{scope.value}:{target}"


class AgentHalts:
    """Applies rule verdicts to the agent's kill switches (see the module docstring)."""

    def __init__(self, switches: KillSwitches) -> None:
        if switches.source is not KillSource.AGENT:
            raise ValueError("the agent acts through the agent source's kill switches only")
        self.switches = switches
        self._holds: dict[str, _Hold] = {}
        self._adopted = False

    def holders(self, scope: KillScope, target: str) -> set[str]:
        """The rules holding the agent's switch on `scope:target`."""
        hold = self._holds.get(_where(scope, target))
        return set(hold.rules) if hold else set()

    def apply(self, verdicts: Iterable[Verdict]) -> list[AgentAction]:
        """Engage, keep or release the agent's switches for these verdicts (one per rule and
        target); rules without a verdict this time keep what they hold."""
        by_place: dict[str, list[Verdict]] = {}
        for v in verdicts:
            by_place.setdefault(_where(v.scope, v.target), []).append(v)
        switches = {(s.scope, s.target, s.source): s for s in self.switches.state().switches}
        if not self._adopted:
            self._adopt(switches.values())
        actions: list[AgentAction] = []
        for place in sorted(set(by_place) | {p for p, h in self._holds.items() if h.rules}):
            actions += self._apply_one(place, by_place.get(place, []), switches)
        return actions

    # ---- one switch -----------------------------------------------------------------------

    def _apply_one(
        self,
        place: str,
        verdicts: list[Verdict],
        switches: dict[tuple[KillScope, str, KillSource], KillSwitch],
    ) -> list[AgentAction]:
        hold = self._holds.setdefault(place, _Hold())
        scope_text, target = place.split(":", 1)
        scope = KillScope(scope_text)
        ours = switches.get((scope, target, KillSource.AGENT))
        manual = switches.get((scope, target, KillSource.MANUAL))
        actions: list[AgentAction] = []
        if hold.rules and hold.written is not None and not _same(ours, hold.written):
            actions += self._lost(hold, ours)
        for v in verdicts:
            if not v.triggered:
                hold.overridden.discard(v.rule)
                hold.deferred.discard(v.rule)
        wanted = {v.rule: v for v in verdicts if v.triggered and v.rule not in hold.overridden}
        # Rules without a verdict this time keep holding what they held.
        judged = {v.rule for v in verdicts}
        wanted.update({r: v for r, v in hold.rules.items() if r not in judged})
        foreign = ours is not None and not _same(ours, hold.written)
        if wanted and (manual is not None or foreign):
            owner = manual if manual is not None else ours
            assert owner is not None
            for rule, v in wanted.items():
                if rule not in hold.deferred:
                    hold.deferred.add(rule)
                    actions.append(
                        AgentAction(
                            "agent.deferred",
                            rule,
                            place,
                            f"{v.reason}; deferring to the {owner.source.value} switch of "
                            f"{owner.actor} on {place} ({owner.reason})",
                            v.figures,
                            owner.as_dict(),
                        )
                    )
            return actions
        released = {r: v for r, v in hold.rules.items() if r not in wanted}
        engaged = {r: v for r, v in wanted.items() if r not in hold.rules}
        if not released and not engaged and (ours is not None or not wanted):
            hold.rules = wanted  # the same rules, fresher figures
            return actions
        releases = {v.rule: v for v in verdicts if not v.triggered}
        if wanted:
            switch = self._engage(scope, target, wanted)
            hold.written = switch
        elif ours is not None and _same(ours, hold.written):
            self.switches.clear(
                scope,
                target=target,
                actor=AGENT_ACTOR,
                reason="; ".join(releases.get(r, v).reason for r, v in released.items()),
            )
            hold.written = None
        hold.rules = wanted
        for rule, v in engaged.items():
            actions.append(
                AgentAction(
                    "agent.engaged",
                    rule,
                    place,
                    v.reason,
                    v.figures,
                    None if hold.written is None else hold.written.as_dict(),
                )
            )
        for rule, v in released.items():
            now = releases.get(rule, v)
            actions.append(AgentAction("agent.released", rule, place, now.reason, now.figures))
        return actions

    def _engage(self, scope: KillScope, target: str, rules: dict[str, Verdict]) -> KillSwitch:
        mode = (
            KillMode.HALTED
            if any(v.mode is KillMode.HALTED for v in rules.values())
            else KillMode.REDUCING
        )
        expiries = [v.expiry_s for v in rules.values()]
        ttl = None if any(e is None for e in expiries) else max(e for e in expiries if e)
        names = ",".join(sorted(rules))
        reason = f"[{names}] " + "; ".join(rules[r].reason for r in sorted(rules))
        record = self.switches.engage(
            scope,
            mode,
            target=None if scope is KillScope.GLOBAL else target,
            actor=AGENT_ACTOR,
            reason=reason[:1024],
            ttl_seconds=ttl,
        )
        return _switch(record["switch"])

    def _lost(self, hold: _Hold, ours: KillSwitch | None) -> list[AgentAction]:
        """The switch the agent wrote is gone or replaced: it expired, or someone cleared it."""
        written = hold.written
        assert written is not None
        place = _where(written.scope, written.target)
        expired = (
            written.expires_at is not None
            and server_time(self.switches.redis) >= written.expires_at
        )
        actions = []
        for rule, v in hold.rules.items():
            if expired:
                actions.append(
                    AgentAction(
                        "agent.expired",
                        rule,
                        place,
                        f"the agent's switch on {place} reached its expiry",
                        v.figures,
                        written.as_dict(),
                    )
                )
            else:
                hold.overridden.add(rule)
                who = "replaced" if ours is not None else "cleared"
                actions.append(
                    AgentAction(
                        "agent.overridden",
                        rule,
                        place,
                        f"the agent's switch on {place} was {who} by someone else: not engaged "
                        f"again until {rule} releases",
                        v.figures,
                        written.as_dict(),
                    )
                )
        hold.rules = {}
        hold.written = None
        return actions

    def _adopt(self, present: Iterable[KillSwitch]) -> None:
        """After a restart, take back the switches this agent wrote (its actor; the rules named
        in the reason's leading brackets)."""
        self._adopted = True
        for s in present:
            if s.source is not KillSource.AGENT or s.actor != AGENT_ACTOR:
                continue
            if not s.reason.startswith("[") or "]" not in s.reason:
                continue
            names = s.reason[1 : s.reason.index("]")].split(",")
            hold = self._holds.setdefault(_where(s.scope, s.target), _Hold())
            hold.written = s
            for name in names:
                hold.rules[name] = Verdict(
                    rule=name,
                    triggered=True,
                    scope=s.scope,
                    target=s.target,
                    mode=s.mode,
                    expiry_s=None,
                    reason=s.reason,
                    figures={"adopted": True},
                )


def _same(current: KillSwitch | None, written: KillSwitch | None) -> bool:
    """Is the switch now there the one the agent wrote (same actor, same instant)?"""
    return (
        current is not None
        and written is not None
        and current.actor == written.actor
        and abs(current.since - written.since) < 1e-6
    )


def _switch(data: dict[str, Any]) -> KillSwitch:
    import json

    return KillSwitch.from_json(json.dumps(data))
