"""Operator actions on the kill switches, each published to the `audit` stream.

The flags tier changes the switches and returns an audit record; this module is the one place
that turns such a record into an `audit` message, so the CLI, notebooks and the kill-switch
dashboard leave the same trail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tradeos_lab.contracts import Audit, new_message
from tradeos_lab.keys import Stream
from tradeos_lab.tiers.flags import KillMode, KillScope, KillSource

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab

PRODUCER = "operator"


def _target(record: dict[str, Any]) -> str:
    switch = record.get("switch") or record
    scope = switch.get("scope")
    return f"kill:{scope}:{switch.get('target', '*')}" if scope else "kill:registry"


def publish_audit(lab: Lab, record: dict[str, Any]) -> str:
    """Publish a flags-tier audit record on the `audit` stream; returns the entry id."""
    old = record.get("cleared") if record["event"].endswith("cleared") else None
    new = record.get("switch") or {k: v for k, v in record.items() if k in ("epoch", "was_armed")}
    payload = Audit(
        actor=record["actor"],
        action=record["event"],
        target=_target(record),
        old_value=old,
        new_value=new or None,
        reason=record["reason"],
    )
    return lab.bus.publish(Stream.AUDIT, new_message(payload, producer=PRODUCER))


def halt(
    lab: Lab,
    *,
    actor: str,
    reason: str,
    scope: KillScope | str = KillScope.GLOBAL,
    target: str | None = None,
    mode: KillMode | str = KillMode.HALTED,
) -> dict[str, Any]:
    """Engage a manual switch (it never lifts by itself) and audit it."""
    record = lab.kill_switches.engage(
        scope, mode, target=target, source=KillSource.MANUAL, actor=actor, reason=reason
    )
    publish_audit(lab, record)
    return record


def clear(
    lab: Lab,
    *,
    actor: str,
    reason: str,
    scope: KillScope | str = KillScope.GLOBAL,
    target: str | None = None,
    source: KillSource | str = KillSource.MANUAL,
) -> dict[str, Any]:
    """Clear one switch explicitly and audit who cleared what, and why."""
    record = lab.kill_switches.clear(
        scope, target=target, source=source, actor=actor, reason=reason
    )
    publish_audit(lab, record)
    return record


def arm(lab: Lab, *, actor: str, reason: str) -> dict[str, Any]:
    """Arm the kill-switch registry (needed on a fresh or restarted flags server) and audit it."""
    record = lab.kill_switches.arm(actor=actor, reason=reason)
    publish_audit(lab, record)
    return record
