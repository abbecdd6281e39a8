"""The agent on the shared runner: risk events on the bus engage its switch, its audit entry
goes out on `audit` and the audit trail keeps it; the agent ignores its own entries."""

from __future__ import annotations

from tradeos_lab.contracts import RiskKind, Severity
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.runner import ServiceRunner
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.agent import Agent
from tradeos_lab.pipeline.services.audit_trail import AuditTrail
from tradeos_lab.tiers.flags import KillSource


def test_breaker_trips_on_the_bus_halt_and_the_decision_is_kept(lab: Lab) -> None:
    ctx = ServiceContext(lab=lab, settings=lab.settings, instance="t")
    for _ in range(3):
        lab.bus.publish(
            Stream.RISK_EVENTS,
            ctx.risk_event(
                None,
                kind=RiskKind.CIRCUIT_BREAKER,
                severity=Severity.WARNING,
                scope="broker",
                detail="broker circuit breaker is open",
            ),
        )
    agent = ServiceRunner(Agent, ctx)
    try:
        agent.drain()
        agent.drain()  # its own audit entries come back on `audit`: nothing more happens
    finally:
        agent.close()
    switches = [s for s in lab.kill_switches.state().switches if s.source is KillSource.AGENT]
    assert [(s.scope.value, s.actor) for s in switches] == [("global", "agent")]
    trail = ServiceRunner(AuditTrail, ctx)
    try:
        trail.drain()
    finally:
        trail.close()
    kept = [a for a in lab.records.audit_trail() if a.action.startswith("agent.")]
    assert [(a.actor, a.action, a.target) for a in kept] == [
        ("service:agent", "agent.engaged", "rule:circuit_breaker")
    ]
    assert kept[0].payload["new_value"]["figures"]["trips"] == 3
