"""Audit trail: the `audit` and `risk_events` streams kept in the records.

What it consumes: `audit` and `risk_events`, which every service writes to. What it decides:
nothing; each message is kept once in the records under its bus message id, so the trail a trader
or a reviewer reads outlives the streams' trimming, and a redelivered message changes nothing.
What it emits: nothing. A records outage is a transient error: the message is retried in place
until the database returns, never dead-lettered for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from tradeos_lab.contracts import AuditMessage, RiskEventMessage
from tradeos_lab.errors import ContractError
from tradeos_lab.keys import Stream
from tradeos_lab.pipeline.service import Service, ServiceContext

if TYPE_CHECKING:
    from tradeos_lab.contracts import Message


class AuditTrail(Service):
    """Keeps every audit entry and risk event in the records, once per message id."""

    name: ClassVar[str] = "audit_trail"
    inputs: ClassVar[tuple[Stream, ...]] = (Stream.AUDIT, Stream.RISK_EVENTS)
    outputs: ClassVar[tuple[Stream, ...]] = ()
    background: ClassVar[bool] = True  # the entries wait on their streams meanwhile

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.records = ctx.lab.records  # opened at start, not on the first entry

    def handle(self, message: Message) -> Sequence[Message]:
        return self.handle_batch([message])[0]

    def handle_batch(self, messages: Sequence[Message]) -> list[Sequence[Message]]:
        """The batch kept with one records write per table."""
        kept: list[AuditMessage | RiskEventMessage] = []
        for message in messages:
            if not isinstance(message, AuditMessage | RiskEventMessage):
                raise ContractError(f"the audit trail keeps audit and risk events, not {message!r}")
            kept.append(message)
        self.records.keep_messages(kept)
        return [() for _ in messages]
