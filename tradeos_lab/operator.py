"""The operator path to the kill switches: the only one that writes manual switches or arms the
registry. The CLI (`flags halt|clear|arm`), notebooks and the kill-switch dashboard go through
here, so a manual halt is never lifted by a service or the agent (they hold `Lab.kill_switches`,
which acts for the `agent` source only). `cancel_all` is the operator's other lever: every open
order at the brokers canceled, whatever the switches say (cancels only ever reduce risk).

Every change reaches the `audit` stream through `audit_sink`, the one place that turns a
kill-switch audit record into an `Audit` message.

The approval queue's decisions are taken here too: `approve` publishes a parked intent on
`intents` under the id it was parked with (so Execution's idempotency holds), `reject` refuses it
on `risk_events`; both are audited with the operator's name and reason, kept in the records and
published. A HALTED kill switch wins over an approval: the intent is not published and keeps
waiting (until its TTL). Deciding an intent that no longer waits is a no-op that says why.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from tradeos_lab.contracts import (
    Audit,
    AuditMessage,
    IntentMessage,
    Message,
    RiskEvent,
    RiskEventMessage,
    RiskKind,
    Severity,
    derive,
    new_message,
)
from tradeos_lab.errors import ProviderError, TransientError, ValidationError
from tradeos_lab.keys import Stream
from tradeos_lab.settings import BROKERS as STACK_BROKERS
from tradeos_lab.tiers.flags import (
    AuditSink,
    KillMode,
    KillScope,
    KillSource,
    KillSwitches,
    ParkedIntent,
)
from tradeos_lab.tiers.flags.approvals import APPROVAL_RULE

if TYPE_CHECKING:
    from tradeos_lab.brokers import Broker
    from tradeos_lab.lab import Lab
    from tradeos_lab.settings import Settings
    from tradeos_lab.tiers.bus import Bus

PRODUCER = "operator"
#: The brokers a stack trades at, by name.
BROKERS: Final = STACK_BROKERS


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


@dataclass(frozen=True)
class Canceled:
    """What `cancel_all` did at one broker: the orders it canceled, or why it could not."""

    broker: str
    client_order_ids: tuple[str, ...] = ()
    error: str | None = None


def cancel_all(lab: Lab, brokers: Iterable[Broker], *, actor: str, reason: str) -> list[Canceled]:
    """Cancel every open order at each broker, one audit entry per broker (kept in the records
    and published on `audit`), whatever the kill switches say. A broker that fails does not stop
    the others; its failure is in its entry and its audit."""
    actor, reason = actor.strip(), reason.strip()
    if not actor or not reason:
        raise ValidationError("cancel-all needs an actor and a reason for the audit trail")
    done: list[Canceled] = []
    for broker in brokers:
        try:
            orders = broker.cancel_all()
        except (TransientError, ProviderError) as e:
            outcome = Canceled(broker.name, error=f"{type(e).__name__}: {e}")
        else:
            outcome = Canceled(broker.name, tuple(o.client_order_id for o in orders))
        payload = Audit(
            actor=actor,
            action="orders.cancel_all",
            target=f"broker:{broker.name}",
            old_value=None,
            new_value={"canceled": list(outcome.client_order_ids), "error": outcome.error},
            reason=reason,
        )
        message = new_message(payload, producer=PRODUCER)
        lab.bus.publish(Stream.AUDIT, message)
        # Kept at once too (the audit trail keeps it again from the bus, once per message id);
        # a records outage leaves it to the audit trail.
        if isinstance(message, AuditMessage):  # new_message builds the payload's own class
            with contextlib.suppress(TransientError):
                lab.records.record_audit(message)
        done.append(outcome)
    return done


def broker_configured(settings: Settings, name: str) -> bool:
    """Whether the stack can reach broker `name` at all (Alpaca needs its API keys)."""
    return name != "alpaca" or settings.alpaca_api_key is not None


def stack_broker(
    lab: Lab,
    name: str,
    *,
    settings: Settings | None = None,
    clock: Callable[[], float] = time.time,
) -> Broker:
    """Broker `name` of the stack: the paper account in its records, Alpaca paper from the
    settings (told the fills the records hold, so none is derived twice; close it when done).
    `settings`: a service's own (its timeframe, its broker's URLs), else the lab's. Alpaca
    without its keys raises `ConfigError` (check `broker_configured` first)."""
    from tradeos_lab.brokers import AlpacaBroker, PaperBroker

    settings = settings or lab.settings
    if name == "paper":
        return PaperBroker.of_stack(
            lab.records, lab.cache, settings.pipeline_timeframe, clock=clock
        )
    if name == "alpaca":
        return AlpacaBroker.from_settings(
            settings, lab.flags, filled_so_far=lab.records.filled_so_far
        )
    raise ValidationError(f"no broker {name!r}: one of {', '.join(BROKERS)}")


@contextlib.contextmanager
def stack_brokers(lab: Lab, names: Iterable[str]) -> Iterator[list[Broker]]:
    """The named brokers of the stack (`stack_broker`), closed on exit."""
    with contextlib.ExitStack() as stack:
        brokers: list[Broker] = []
        for name in names:
            broker = stack_broker(lab, name)
            close = getattr(broker, "close", None)
            if close is not None:
                stack.callback(close)
            brokers.append(broker)
        yield brokers


# ---- the approval queue ---------------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalOutcome:
    """What an approval or a rejection did: `done` when the intent was decided now."""

    intent_id: str
    done: bool
    detail: str


def pending_approvals(lab: Lab) -> list[ParkedIntent]:
    """The intents waiting for an operator, soonest deadline first."""
    return lab.flags.approvals.pending()


def approve(lab: Lab, intent_id: str, *, actor: str, reason: str) -> ApprovalOutcome:
    """Publish the parked intent `intent_id` on `intents` (kept in the records first) with the
    approval audited; not while a kill switch denies it (the intent keeps waiting)."""
    actor, reason = _decision_words(actor, reason)
    queue = lab.flags.approvals
    waiting = queue.get(intent_id)
    if waiting is None:
        return _not_waiting(intent_id)
    intent = waiting.intent
    kill = lab.kill_switches.check_order(
        intent.strategy, intent.symbol, intent.side, intent.quantity, book=lab.records
    )
    if not kill.allowed:
        return ApprovalOutcome(
            intent_id,
            False,
            f"not published: kill switch {kill.reason}; the intent keeps waiting",
        )
    parked = queue.take(intent_id)
    if parked is None:
        return _not_waiting(intent_id)
    _publish_or_put_back(lab, parked, parked.message)
    _keep(lab, parked.message, _decision_audit(parked, "intent.approved", actor, reason))
    return ApprovalOutcome(
        intent_id,
        True,
        f"approved: {parked.describe()} published on intents as {actor}",
    )


def reject(lab: Lab, intent_id: str, *, actor: str, reason: str) -> ApprovalOutcome:
    """Refuse the parked intent `intent_id`: a `risk_events` entry and an audit entry naming the
    operator and the reason, kept in the records and published."""
    actor, reason = _decision_words(actor, reason)
    queue = lab.flags.approvals
    parked = queue.take(intent_id)
    if parked is None:
        return _not_waiting(intent_id)
    intent = parked.intent
    event = derive(
        parked.message,
        RiskEvent(
            kind=RiskKind.LIMIT_BREACH,
            severity=Severity.WARNING,
            scope=f"symbol:{intent.symbol}",
            detail=f"{APPROVAL_RULE}: intent {intent_id} rejected by {actor}: {reason}"[:4000],
            data={**parked.facts(), "actor": actor},
            ts=datetime.now(UTC),
        ),
        producer=PRODUCER,
    )
    if not isinstance(event, RiskEventMessage):  # derive builds the payload's own class
        raise TypeError("a risk event is a RiskEventMessage")
    _publish_or_put_back(lab, parked, event)
    _keep(lab, event, _decision_audit(parked, "intent.rejected", actor, reason))
    return ApprovalOutcome(intent_id, True, f"rejected: {parked.describe()} as {actor}")


def _decision_words(actor: str, reason: str) -> tuple[str, str]:
    actor, reason = actor.strip(), reason.strip()
    if not actor or not reason:
        raise ValidationError("an approval decision needs an actor and a reason for the audit")
    return actor, reason


def _not_waiting(intent_id: str) -> ApprovalOutcome:
    return ApprovalOutcome(
        intent_id, False, f"intent {intent_id} is not waiting (already decided or expired)"
    )


def _decision_audit(parked: ParkedIntent, action: str, actor: str, reason: str) -> AuditMessage:
    message = derive(
        parked.message,
        Audit(
            actor=actor,
            action=action,
            target=f"intent:{parked.intent_id}",
            old_value=None,
            new_value=parked.facts(),
            reason=reason[:4000],
        ),
        producer=PRODUCER,
    )
    if not isinstance(message, AuditMessage):  # derive builds the payload's own class
        raise TypeError("an audit entry is an AuditMessage")
    return message


def _publish_or_put_back(lab: Lab, parked: ParkedIntent, message: Message) -> None:
    """Publish the decision's effect; the intent goes back in the queue when the bus fails."""
    try:
        lab.bus.publish(message.STREAM, message)
    except BaseException:
        lab.flags.approvals.restore(parked)
        raise


def _keep(lab: Lab, effect: IntentMessage | RiskEventMessage, audit: AuditMessage) -> None:
    """The audit entry published, and both kept in the records at once (the audit trail and
    Execution keep them again from the bus, once per message id); a records outage leaves
    them to those."""
    lab.bus.publish(Stream.AUDIT, audit)
    with contextlib.suppress(TransientError):
        lab.records.keep_messages([effect, audit])
