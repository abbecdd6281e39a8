"""A pipeline service: the pure logic of one stage, run by `ServiceRunner`.

A service declares the streams it reads and the streams it may write, and turns one input message
into its outputs (`handle`), or a batch of them at once (`handle_batch`). The runner owns
everything around it: consumer groups, batches, blocking reads, retries, dead letters,
heartbeats, health and shutdown. Outputs and the ack of their input commit together in one
MULTI/EXEC, with ids derived from the input's id, so a stage that only transforms messages has an
exactly-once effect on the bus.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from tradeos_lab.contracts import (
    Audit,
    RiskEvent,
    RiskKind,
    Severity,
    derive,
    new_message,
)
from tradeos_lab.errors import ValidationError
from tradeos_lab.keys import Stream

if TYPE_CHECKING:
    from tradeos_lab.contracts import Message, Payload
    from tradeos_lab.lab import Lab
    from tradeos_lab.settings import Settings


@dataclass(frozen=True)
class Timer:
    """Work a service does on a schedule (ingestion's poll, a position snapshot).

    `fire` returns the messages to publish; each goes to its own contract's stream.
    """

    name: str
    every_s: float
    fire: Callable[[], Sequence[Message]]

    def __post_init__(self) -> None:
        if not (isinstance(self.every_s, int | float) and 0 < self.every_s < math.inf):
            raise ValidationError(
                f"timer {self.name!r} must fire every positive, finite number of seconds, "
                f"not {self.every_s!r}"
            )
        if not callable(self.fire):
            raise ValidationError(f"timer {self.name!r} needs a callable to fire")


@dataclass
class ServiceContext:
    """What a service may use: the lab's tiers and stores, the settings, its name and a clock."""

    lab: Lab
    settings: Settings
    instance: str
    clock: Callable[[], float] = field(default=time.time)
    #: The producer stamped on messages built through this context; each `Service` holds a copy
    #: naming itself.
    producer: str = "service"

    def now(self) -> datetime:
        """The context's clock as an aware UTC datetime."""
        return datetime.fromtimestamp(self.clock(), UTC)

    def message(self, parent: Message | None, payload: Payload) -> Message:
        """A message caused by `parent` (its correlation id carries over), or a new chain."""
        if parent is None:
            return new_message(payload, producer=self.producer, produced_at=self.now())
        return derive(parent, payload, producer=self.producer, produced_at=self.now())

    def audit(
        self,
        parent: Message | None,
        *,
        action: str,
        target: str,
        reason: str,
        old_value: Any = None,
        new_value: Any = None,
    ) -> Message:
        """An `audit` message saying what this service decided and why (actor `service:NAME`)."""
        payload = self.audit_payload(
            action=action, target=target, reason=reason, old_value=old_value, new_value=new_value
        )
        return self.message(parent, payload)

    def audit_payload(
        self, *, action: str, target: str, reason: str, old_value: Any = None, new_value: Any = None
    ) -> Audit:
        """The payload of `audit`, for a message that joins another chain than its parent's
        (built once, in that chain)."""
        return Audit(
            actor=f"service:{self.producer}",
            action=action,
            target=target,
            old_value=old_value,
            new_value=new_value,
            reason=reason,
        )

    def risk_event(
        self,
        parent: Message | None,
        *,
        kind: RiskKind | str,
        severity: Severity | str,
        scope: str,
        detail: str,
        data: Mapping[str, Any] | None = None,
        ts: datetime | None = None,
    ) -> Message:
        """A `risk_events` message an operator must see (limit breach, breaker, failure, ...)."""
        payload = self.risk_event_payload(
            kind=kind, severity=severity, scope=scope, detail=detail, data=data, ts=ts
        )
        return self.message(parent, payload)

    def risk_event_payload(
        self,
        *,
        kind: RiskKind | str,
        severity: Severity | str,
        scope: str,
        detail: str,
        data: Mapping[str, Any] | None = None,
        ts: datetime | None = None,
    ) -> RiskEvent:
        """The payload of `risk_event`, for a message that joins another chain than its
        parent's (built once, in that chain)."""
        return RiskEvent(
            kind=RiskKind(kind),
            severity=Severity(severity),
            scope=scope,
            detail=detail,
            data=dict(data or {}),
            ts=ts or self.now(),
        )


#: How long a background service waits after a batch that did not fill before it reads again
#: (`Service.linger_s`).
BACKGROUND_LINGER_S = 0.1


class Service:
    """Pure logic of one stage: what it consumes, what it decides, what it emits.

    `name` is the canonical lower-case service name and the consumer group on each input stream.
    """

    name: ClassVar[str]
    inputs: ClassVar[tuple[Stream, ...]] = ()
    #: Every stream the service may emit to (audit and risk_events included).
    outputs: ClassVar[tuple[Stream, ...]] = ()
    #: Streams the service read in an earlier version: the runner drops its group there at
    #: start, so a group nobody reads any more neither holds back trimming nor reports losses.
    retired_inputs: ClassVar[tuple[Stream, ...]] = ()
    #: A background service is off the way from a bar to its fill (what it keeps may lag a
    #: burst): in a process of its own it gives the CPU and the records' write turn to the
    #: trading stages first, so a burst of bars reaches its fills sooner, and catches up after.
    background: ClassVar[bool] = False

    def __init__(self, ctx: ServiceContext) -> None:
        # A context of its own, so messages it builds name this service as their producer even
        # when one context is handed to several services (a test, a notebook).
        self.ctx = replace(ctx, producer=self.name)

    def handle(self, message: Message) -> Sequence[Message]:
        """Outputs for one input.

        Build each with `derive(message, payload, producer=self.name)` (or `ctx.audit` /
        `ctx.risk_event`) so the correlation id carries over and causation is the input's id. The
        runner replaces each output's message_id by one derived from the input's id and the
        output's index, so a re-handled input emits the same ids, and commits the outputs with the
        ack of the input in one MULTI/EXEC. Effects outside the bus (records, broker, cache) must
        be idempotent by key. Raise `TransientError` (or `DependencyUnavailable`) when a store is
        down: the input is retried in place. Raise anything else for a bad message: it is retried
        up to `max_deliveries` times, then dead-lettered with the reason.
        """
        raise NotImplementedError(f"service {self.name!r} consumes nothing")

    def handle_batch(self, messages: Sequence[Message]) -> list[Sequence[Message]]:
        """Outputs for each of `messages` (a batch read from one input), in order.

        By default `handle` per message. A service with store effects overrides it to pay for a
        batch what `handle` pays per message: one records transaction, one Redis pipeline. The
        same contract as `handle` holds per message (derived outputs, effects idempotent by key),
        and the whole batch may be handed over again after a failure: the runner then falls back
        to `handle` per message, so a bad message fails alone. Raise `TransientError` when a store
        is down: the batch is retried in place.
        """
        return [self.handle(message) for message in messages]

    def on_redelivery(self, messages: Sequence[Message]) -> None:
        """Called before `messages`, delivered again, are handled. Their earlier handling was
        never committed (outputs and ack commit together): a crash, a handler that failed, or a
        commit the bus refused. A service that keeps in memory what it has taken (the Signal
        Engine's live states) forgets what it took from them; nothing by default."""

    def linger_s(self, stream: Stream) -> float:
        """How long the runner waits, after a batch of `stream` that did not fill, before it
        reads `stream` again: what came meanwhile is then one batch (one transaction, one
        commit) instead of a wake-up for every few entries. A background service lingers
        `BACKGROUND_LINGER_S`; a trading stage reads each entry as it comes."""
        return BACKGROUND_LINGER_S if self.background else 0.0

    def timers(self) -> Sequence[Timer]:
        """Scheduled work; none by default."""
        return ()

    def close(self) -> None:
        """Release what the service holds (connections, files); called once by the runner."""
