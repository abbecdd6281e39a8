"""The operator path to the kill switches: the only one that writes manual switches or arms the
registry. The CLI (`flags halt|clear|arm`), notebooks and the kill-switch dashboard go through
here, so a manual halt is never lifted by a service or the agent (they hold `Lab.kill_switches`,
which acts for the `agent` source only).

Every change reaches the `audit` stream through `audit_sink`, the one place that turns a
kill-switch audit record into an `Audit` message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tradeos_lab.contracts import Audit, new_message
from tradeos_lab.keys import Stream
from tradeos_lab.tiers.flags import AuditSink, KillMode, KillScope, KillSource, KillSwitches

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab
    from tradeos_lab.tiers.bus import Bus

PRODUCER = "operator"


def audit_sink(bus: Bus, *, producer: str) -> AuditSink:
    """A sink that publishes each kill-switch audit record as an `Audit` message on `audit`."""

    def publish(record: dict[str, Any]) -> str:
        return bus.publish(Stream.AUDIT, new_message(audit_payload(record), producer=producer))

    return publish


def audit_payload(record: dict[str, Any]) -> Audit:
    """The `Audit` message for one kill-switch audit record."""
    new = record.get("switch") or {k: v for k, v in record.items() if k in ("epoch", "was_armed")}
    return Audit(
        actor=record["actor"],
        action=record["event"],
        target=_target(record),
        old_value=record.get("cleared"),
        new_value=new or None,
        reason=record["reason"],
    )


def _target(record: dict[str, Any]) -> str:
    switch = record.get("switch") or record
    scope = switch.get("scope")
    return f"kill:{scope}:{switch.get('target', '*')}" if scope else "kill:registry"


def operator_switches(lab: Lab, source: KillSource | str = KillSource.MANUAL) -> KillSwitches:
    """Kill switches acting for `source` on the operator's behalf, audited as the operator."""
    return KillSwitches(
        lab.flags.redis,
        keys=lab.keys,
        source=source,
        audit=audit_sink(lab.bus, producer=PRODUCER),
    )


def halt(
    lab: Lab,
    *,
    actor: str,
    reason: str,
    scope: KillScope | str = KillScope.GLOBAL,
    target: str | None = None,
    mode: KillMode | str = KillMode.HALTED,
) -> dict[str, Any]:
    """Engage a manual switch (it never lifts by itself); returns its audit record."""
    return operator_switches(lab).engage(scope, mode, target=target, actor=actor, reason=reason)


def clear(
    lab: Lab,
    *,
    actor: str,
    reason: str,
    scope: KillScope | str = KillScope.GLOBAL,
    target: str | None = None,
    source: KillSource | str = KillSource.MANUAL,
) -> dict[str, Any]:
    """Clear one switch of either source explicitly; the audit record says who, what and why."""
    return operator_switches(lab, source).clear(scope, target=target, actor=actor, reason=reason)


def arm(lab: Lab, *, actor: str, reason: str) -> dict[str, Any]:
    """Arm the kill-switch registry (needed on a fresh or restarted flags server), audited."""
    return operator_switches(lab).arm(actor=actor, reason=reason)
