"""Dead letters: entries a group gave up on, kept whole in `{ns}:dlq:{stream}` for study or replay.

An entry is moved (XADD to the dead-letter stream, XACK on its stream, a `dead_letter` risk event)
in the MULTI the consumer settles its batch with, so it is never both pending and dead-lettered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import redis

from tradeos_lab import contracts
from tradeos_lab.errors import ContractError, StoreError
from tradeos_lab.keys import Stream
from tradeos_lab.tiers.bus.events import stream_risk_event
from tradeos_lab.tiers.bus.metrics import DEAD_LETTERED
from tradeos_lab.tiers.bus.wire import FIELD, FIELD_B, Entry, text, translate_redis_error

if TYPE_CHECKING:
    from redis.client import Pipeline

    from tradeos_lab.contracts import Message
    from tradeos_lab.tiers.bus.bus import Bus

log = logging.getLogger(__name__)

DeadLetterReason = Literal["invalid", "handler_failed", "max_deliveries", "dependency_unavailable"]
_ORIG_PREFIX = b"orig."
_ERROR_TEXT_MAX = 1000


@dataclass(slots=True)
class DeadLetter:
    """An entry to move, why, and the error that decided it."""

    entry: Entry
    reason: DeadLetterReason
    error: str


class DeadLetters:
    """Moves entries to a stream's dead-letter stream and replays them from there."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def queue(
        self,
        pipe: Pipeline,
        stream: Stream,
        group: str,
        consumer: str,
        dead: Sequence[DeadLetter],
    ) -> None:
        """Queue each dead letter's XADD and its risk event on `pipe` (the caller XACKs)."""
        dlq = self.bus.keys.dead_letter(stream)
        for d in dead:
            pipe.xadd(
                dlq,
                self._fields(stream, group, consumer, d),  # type: ignore[arg-type]
                maxlen=self.bus.dead_letter_maxlen,
                approximate=True,
            )
            event = self._event(stream, group, d)
            if event is not None:
                self.bus.queue_publish(pipe, Stream.RISK_EVENTS, event)
            DEAD_LETTERED.labels(stream=stream.value, group=group, reason=d.reason).inc()
            log.warning(
                "dead-lettered %s entry %s for group %s after %d deliveries: %s (%s)",
                stream.value,
                text(d.entry.entry_id),
                group,
                d.entry.deliveries,
                d.reason,
                d.error[:200],
            )

    @staticmethod
    def _fields(
        stream: Stream, group: str, consumer: str, dead: DeadLetter
    ) -> dict[bytes, bytes | str | int]:
        fields: dict[bytes, bytes | str | int] = {
            b"reason": dead.reason,
            b"error": dead.error[:_ERROR_TEXT_MAX],
            b"stream": stream.value,
            b"group": group,
            b"consumer": consumer,
            b"entry_id": dead.entry.entry_id,
            b"deliveries": dead.entry.deliveries,
            b"dead_lettered_at_ms": int(time.time() * 1000),
        }
        for name, value in dead.entry.fields.items():
            fields[name if name == FIELD_B else _ORIG_PREFIX + name] = value
        return fields

    def _event(self, stream: Stream, group: str, dead: DeadLetter) -> Message | None:
        """A `dead_letter` risk event, published in the MULTI that moves the entry."""
        entry_id = text(dead.entry.entry_id)
        try:
            return stream_risk_event(
                contracts.RiskKind.DEAD_LETTER,
                stream,
                f"{stream.value} entry {entry_id} moved to the dead-letter stream by group "
                f"{group} after {dead.entry.deliveries} deliveries: {dead.reason}: "
                f"{dead.error[:_ERROR_TEXT_MAX]}",
                {
                    "stream": stream.value,
                    "group": group,
                    "entry_id": entry_id,
                    "reason": dead.reason,
                    "deliveries": dead.entry.deliveries,
                    "dead_letter_stream": self.bus.keys.dead_letter(stream),
                },
                producer=self.bus.producer,
            )
        except ContractError:
            log.exception("could not build the dead_letter risk event")
            return None

    def replay(self, stream: Stream | str, dead_letter_id: str) -> str:
        """Re-publish a dead-letter entry to its stream and drop it from the dead-letter stream.

        The message is validated first: a `ContractError` leaves both streams untouched. A
        missing entry is a `StoreError`; Redis errors become `DependencyUnavailable` (unreachable)
        or `StoreError` (refused).
        """
        s = Stream(stream)
        dlq = self.bus.keys.dead_letter(s)
        try:
            rows: Any = self.bus.redis.xrange(dlq, dead_letter_id, dead_letter_id)
            if not rows:
                raise StoreError(f"no dead-letter entry {dead_letter_id} for {s.value}")
            _, fields = rows[0]
            raw = fields.get(FIELD_B)
            if raw is None:
                raise ContractError(f"dead-letter entry {dead_letter_id} holds no {FIELD!r} field")
            self.bus.decode(s, {FIELD_B: raw})
            pipe = self.bus.redis.pipeline(transaction=True)
            pipe.xdel(dlq, dead_letter_id)
            self.bus.queue_encoded(pipe, s, raw)  # the bus's XADD, counted where it must be
            new_id = pipe.execute()[1]
        except redis.RedisError as e:
            raise translate_redis_error(e, f"replay of {dead_letter_id} to {s.value}") from e
        return text(new_id)
