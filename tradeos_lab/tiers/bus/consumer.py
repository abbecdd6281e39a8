"""A consumer of one group: read, hand each message to a handler, commit its outputs and the ack.

A `Consumer` reads its group's entries (its own pending ones first after a restart, then new ones,
plus entries other consumers left idle, reclaimed with XAUTOCLAIM) and hands each to a handler as a
typed `Delivery`. The messages the handler returns are published and the input acked in one
MULTI/EXEC, so a stage that only transforms messages has an exactly-once effect on the bus; outputs
carry ids derived from the input's id, so a re-handled message emits the same ids.

Failures are told apart. A transient one (`TransientError`: the handler's store is down) is
retried in place with backoff and is not a delivery; past `transient_retry_s` the message is
dead-lettered with a risk event saying so. A message the handler rejects stays pending and comes
back after `claim_idle_ms`, up to `max_deliveries`. Redelivered entries are fetched one at a time,
so a message that kills its process is the only one whose delivery count climbs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

import redis

from tradeos_lab.contracts.ids import derived_message_id
from tradeos_lab.contracts.messages import Envelope, restamped
from tradeos_lab.errors import ContractError, StoreError, TransientError
from tradeos_lab.keys import Stream
from tradeos_lab.retry import RetryPolicy
from tradeos_lab.tiers.bus.dead_letters import DeadLetter
from tradeos_lab.tiers.bus.metrics import ACKED, CONSUMED, REDELIVERED
from tradeos_lab.tiers.bus.wire import (
    ZERO_ID,
    Entry,
    pack_command,
    queue_command,
    text,
    translate_redis_error,
)

if TYPE_CHECKING:
    from tradeos_lab.contracts import Message
    from tradeos_lab.tiers.bus.bus import Bus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message handed to a handler; `deliveries` counts this delivery too."""

    stream: Stream
    group: str
    consumer: str
    entry_id: str
    message: Message
    deliveries: int
    #: `apply_once` markers set for this delivery; the ack shortens their TTL.
    effect_markers: list[str] = field(default_factory=list, compare=False, repr=False)

    @property
    def redelivered(self) -> bool:
        return self.deliveries > 1


@dataclass(slots=True)
class PollResult:
    """What one `Consumer.poll` did."""

    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    lost: int = 0

    @property
    def fetched(self) -> int:
        return self.handled + self.failed + self.dead_lettered + self.lost

    def add(self, other: PollResult) -> None:
        self.handled += other.handled
        self.failed += other.failed
        self.dead_lettered += other.dead_lettered
        self.lost += other.lost


#: A handler returns the messages its input caused (a message, several, or None for none); each
#: is published to its own contract's stream in the MULTI that acks the input.
Handler = Callable[[Delivery], object]
#: A batch handler returns, for each delivery in order, what `Handler` would have returned.
BatchHandler = Callable[[Sequence[Delivery]], Sequence[object]]
_T = TypeVar("_T")

#: Failures that say nothing about the message: retried in place, never counted as a delivery.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    redis.ConnectionError,
    redis.TimeoutError,
)


#: The house retry policy's full-jitter backoff (50 ms doubling to 2 s); the bound on the total
#: wait is `transient_retry_s`, not a number of attempts.
_BACKOFF = RetryPolicy(base=0.05, cap=2.0)


class _GaveUp(Exception):
    """The handler's dependency stayed unavailable for `transient_retry_s`."""


class _Stopped(Exception):
    """The consumer was asked to stop while it waited for a dependency."""


@dataclass(slots=True)
class _Batch:
    """What one fetched batch settles to: acks, outputs and dead letters, in one MULTI."""

    entry_ids: list[bytes]
    acks: list[bytes] = field(default_factory=list)
    outputs: list[tuple[Stream, bytes]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    gone: list[bytes] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)


class Consumer:
    """One named consumer of a group: drains its own pending first, reclaims idle entries.

    `run(handler)` is the service loop (pipelined acks, survives Redis restarts); `poll(handler)`
    does one batch; iterating yields `Delivery` objects and acks each once the loop body is done.
    """

    def __init__(
        self,
        bus: Bus,
        stream: Stream,
        group: str,
        name: str,
        *,
        count: int,
        block_ms: int,
        start_id: str,
        maintenance_s: float,
    ) -> None:
        self.bus = bus
        self.stream = stream
        self.group = group
        self.name = name
        self.count = count
        self.block_ms = block_ms
        self.start_id = start_id
        self.maintenance_s = maintenance_s
        self.max_deliveries = bus.settings.max_deliveries
        self.claim_idle_ms = bus.settings.claim_idle_ms
        self.transient_retry_s = bus.settings.transient_retry_s
        self._key = bus.stream_key(stream)
        self._redis = bus.redis
        self._exec: Callable[..., Any] = bus.redis.execute_command
        self._group_ready = False
        self._draining = True
        self._drain_cursor: bytes | str = "0"
        self._claim_cursor: bytes | str = ZERO_ID
        self._next_claim = 0.0
        self._next_maintenance = 0.0
        self._lost = 0  # pending entries found trimmed while fetching (for PollResult.lost)
        labels = {"stream": stream.value, "group": group}
        self._m_consumed = CONSUMED.labels(**labels)
        self._m_acked = ACKED.labels(**labels)
        self._m_redelivered = REDELIVERED.labels(**labels)

    def __repr__(self) -> str:
        return f"<Consumer {self.name} of {self.group} on {self.stream.value}>"

    # ---- fetching -------------------------------------------------------------------------------

    def _ensure_group(self) -> None:
        if not self._group_ready:
            self.bus.ensure_group(self.stream, self.group, start_id=self.start_id)
            self._group_ready = True

    def restart(self) -> None:
        """Forget the read position: drain own pending again (after a reconnect, say)."""
        self._group_ready = False
        self._draining = True
        self._drain_cursor = "0"
        self._claim_cursor = ZERO_ID
        self._next_claim = 0.0

    def _fetch(self, block_ms: int) -> list[Entry]:
        self._ensure_group()
        try:
            if time.monotonic() >= self._next_claim:
                entries = self._claim()
                if entries:
                    return entries
            if self._draining:
                entries = self._drain()
                if entries:
                    return entries
            return self._read_new(block_ms)
        except redis.ResponseError as e:
            if "NOGROUP" in str(e) or "no such key" in str(e):
                log.warning("group %s on %s is gone; recreating it", self.group, self.stream)
                self.restart()
                return []
            raise

    def _claim(self) -> list[Entry]:
        reply = self._exec(
            "XAUTOCLAIM",
            self._key,
            self.group,
            self.name,
            self.claim_idle_ms,
            self._claim_cursor,
            "COUNT",
            1,  # one at a time: a redelivered entry's count only climbs when it is handled
        )
        cursor, claimed = reply[0], reply[1]
        self._claim_cursor = cursor
        if cursor in (ZERO_ID, "0-0"):
            self._next_claim = time.monotonic() + min(self.claim_idle_ms / 2000.0, 1.0)
        # Redis 7 lists ids trimmed while pending (already dropped from the pending list);
        # Redis 6.2 claims them as nil entries. Either way every gone one is reaped in one report.
        deleted = reply[2] if len(reply) > 2 else []
        found = [(eid, fields) for eid, fields in claimed if eid is not None and fields]
        if deleted or len(found) < len(claimed):
            self._reap_gone(deleted)
        return self._with_counts(found)

    def _reap_gone(self, already_gone: Sequence[bytes] = ()) -> None:
        loss = self.bus.trim_loss.reap_gone_pending(
            self.stream, self.group, already_gone=already_gone
        )
        if loss is not None:
            self._lost += loss.count or 0

    def _drain(self) -> list[Entry]:
        """This consumer's next own pending entry (after a restart), or [] once none is left.

        One at a time: a batch that died with its process is handled entry by entry, so only the
        entry handed to the handler counts a delivery.
        """
        while True:
            reply = self._exec(
                "XREADGROUP",
                "GROUP",
                self.group,
                self.name,
                "COUNT",
                1,
                "STREAMS",
                self._key,
                self._drain_cursor,
            )
            rows = reply[0][1] if reply else []
            if not rows:
                self._draining = False
                return []
            self._drain_cursor = rows[-1][0]
            if all(fields for _, fields in rows):
                return self._with_counts(rows)
            self._reap_gone()  # trimmed while pending: reap them all at once, then go on

    def _with_counts(self, rows: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> list[Entry]:
        """Entries with their delivery counts, read from the group's pending list."""
        if not rows:
            return []
        pending = self._redis.xpending_range(
            self._key,
            self.group,
            rows[0][0],
            rows[-1][0],
            len(rows) * 4 + 16,
            consumername=self.name,
        )
        counts = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        entries = [Entry(eid, fields or {}, counts.get(eid, 2)) for eid, fields in rows]
        self._m_redelivered.inc(len(entries))
        return entries

    def _read_new(self, block_ms: int) -> list[Entry]:
        # The group's state is read in the same MULTI as the XREADGROUP: once a read jumps past a
        # trimmed gap the gap can no longer be seen, so it is checked right before each read.
        pipe = self._redis.pipeline(transaction=True)
        pipe.xinfo_stream(self._key)
        pipe.xinfo_groups(self._key)
        counted = not self.bus.counts_entries()  # Redis 6.2: the bus's own counts, read with it
        if counted:
            self.bus.trim_loss.queue_counted(pipe, self.stream, self.group)
        queue_command(
            pipe,
            "XREADGROUP",
            "GROUP",
            self.group,
            self.name,
            "COUNT",
            self.count,
            "STREAMS",
            self._key,
            ">",
        )
        info, groups, *tally, reply = pipe.execute()
        for g in groups:
            if text(g["name"]) == self.group:
                self.bus.trim_loss.undelivered(
                    self.stream, self.group, info, g, tally[0] if counted else (None, None)
                )
        rows = reply[0][1] if reply else []
        if not rows and block_ms > 0:
            reply = self._exec(
                "XREADGROUP",
                "GROUP",
                self.group,
                self.name,
                "COUNT",
                self.count,
                "BLOCK",
                block_ms,
                "STREAMS",
                self._key,
                ">",
            )
            rows = reply[0][1] if reply else []
        return [Entry(eid, fields, 1) for eid, fields in rows]

    # ---- settling -------------------------------------------------------------------------------

    def _triage(self, entry: Entry, result: PollResult) -> Message | DeadLetter | None:
        """The message to hand over, a dead letter, or None for an entry trimmed while pending."""
        if entry.gone:
            result.lost += 1
            return None
        if entry.deliveries > self.max_deliveries:
            return DeadLetter(
                entry,
                "max_deliveries",
                f"delivered {entry.deliveries} times without an ack "
                f"(max_deliveries={self.max_deliveries})",
            )
        try:
            return self.bus.decode(self.stream, entry.fields)
        except ContractError as e:
            return DeadLetter(entry, "invalid", f"{type(e).__name__}: {e}")

    def _sort(self, entry: Entry, batch: _Batch, result: PollResult) -> Delivery | None:
        """The delivery to hand over, or None for an entry the batch settles itself (trimmed
        while pending: acked as gone; undecodable or over its deliveries: dead-lettered)."""
        triaged = self._triage(entry, result)
        if triaged is None:
            batch.gone.append(entry.entry_id)
            return None
        if isinstance(triaged, DeadLetter):
            batch.dead.append(triaged)
            return None
        return Delivery(
            self.stream, self.group, self.name, text(entry.entry_id), triaged, entry.deliveries
        )

    def _settle(self, batch: _Batch) -> None:
        """Publish the outputs, move dead letters and XACK, in one MULTI."""
        acks, outputs, dead, gone = batch.acks, batch.outputs, batch.dead, batch.gone
        if not acks and not dead and not gone:
            return
        if not outputs and not dead and not gone and not batch.markers:
            self.bus.wire.call(pack_command(("XACK", self._key, self.group, *acks)), 1)
            self._m_acked.inc(len(acks))
            return
        if not dead and not gone:  # the common case: outputs, acks and markers, packed
            ttl = self.bus.effect_marker_ttl_s
            self.bus.commit(
                outputs,
                [
                    pack_command(("XACK", self._key, self.group, *acks)),
                    *(pack_command(("EXPIRE", marker, ttl)) for marker in batch.markers),
                ],
            )
            self._m_acked.inc(len(acks))
            return
        pipe = self._redis.pipeline(transaction=True)
        for stream, raw in outputs:
            self.bus.queue_encoded(pipe, stream, raw)
        self.bus.dead_letters.queue(pipe, self.stream, self.group, self.name, dead)
        pipe.xack(self._key, self.group, *acks, *(d.entry.entry_id for d in dead), *gone)
        for marker in batch.markers:  # acked: the effect's marker only has duplicates to stop
            pipe.expire(marker, self.bus.effect_marker_ttl_s)
        try:
            pipe.execute()
        except redis.RedisError as e:  # refused when queued (OOM): nothing committed, all pending
            raise translate_redis_error(e, f"settling a batch of {self.stream.value}") from e
        self._m_acked.inc(len(acks))
        if gone:
            self.bus.trim_loss.report_unacked(self.stream, self.group, gone, len(gone))

    def poll(
        self,
        handler: Handler,
        *,
        block_ms: int | None = None,
        stop: threading.Event | None = None,
        batch_handler: BatchHandler | None = None,
    ) -> PollResult:
        """Fetch one batch, hand each message to `handler`, commit outputs and acks together.

        With `batch_handler`, the batch is handed over whole first (one call, so the handler can
        do one store transaction and one read of each store for all of them; a batch of one too,
        which is what a lightly loaded stage mostly reads); should it fail, each message goes to
        `handler` alone. A handler exception leaves the entry pending: it is redelivered
        after `claim_idle_ms`, and dead-lettered once it has failed `max_deliveries` deliveries. A
        transient error is retried in place (see `_handle`); `stop` interrupts that wait, leaving
        the rest of the batch pending. A bus Redis error propagates, so `run` can back off.
        """
        result = PollResult()
        entries = self._fetch(self.block_ms if block_ms is None else block_ms)
        result.lost, self._lost = self._lost, 0
        if not entries:
            return result
        self._m_consumed.inc(len(entries))
        batch = _Batch([e.entry_id for e in entries])
        try:
            todo: list[tuple[Entry, Delivery]] = []
            for entry in entries:
                delivery = self._sort(entry, batch, result)
                if delivery is not None:
                    todo.append((entry, delivery))
            if batch_handler is not None and todo:
                todo = self._handle_batch(batch_handler, todo, batch, result, stop)
            self._handle_each(handler, todo, batch, result, stop)
        finally:
            self._settle(batch)
        result.handled = len(batch.acks)
        result.dead_lettered = len(batch.dead)
        return result

    def _handle_batch(
        self,
        batch_handler: BatchHandler,
        todo: list[tuple[Entry, Delivery]],
        batch: _Batch,
        result: PollResult,
        stop: threading.Event | None,
    ) -> list[tuple[Entry, Delivery]]:
        """Hand the whole batch over at once; what is left to handle one at a time.

        A transient error is retried in place for the batch as a whole; a batch that fails
        otherwise (one bad message in it) is handed over again one message at a time, so only the
        bad one fails, and the handler's effects, idempotent by key, are not doubled.
        """
        deliveries = [d for _, d in todo]
        try:
            returned = self._retried(lambda: batch_handler(deliveries), batch, stop)
            if not isinstance(returned, Sequence) or len(returned) != len(deliveries):
                raise ContractError(
                    f"a batch handler returns one output list per message ({len(deliveries)})"
                )
            encoded = [self._outputs(d, out) for d, out in zip(deliveries, returned, strict=True)]
        except _Stopped:
            return []  # all left pending
        except _GaveUp as e:
            result.failed += len(todo)
            batch.dead.extend(
                DeadLetter(entry, "dependency_unavailable", str(e)) for entry, _ in todo
            )
            return []
        except Exception as e:
            log.info(
                "batch of %d %s entries failed (%s: %s); handling them one at a time",
                len(todo),
                self.stream.value,
                type(e).__name__,
                str(e)[:200],
            )
            return todo
        for (entry, delivery), outputs in zip(todo, encoded, strict=True):
            batch.outputs.extend(outputs)
            batch.markers.extend(delivery.effect_markers)
            batch.acks.append(entry.entry_id)
        return []

    def _handle_each(
        self,
        handler: Handler,
        todo: list[tuple[Entry, Delivery]],
        batch: _Batch,
        result: PollResult,
        stop: threading.Event | None,
    ) -> None:
        """Hand the deliveries over one at a time; a failure concerns its own message only."""
        for entry, delivery in todo:
            try:
                outputs = self._handle(handler, delivery, batch, stop)
            except _Stopped:
                break
            except _GaveUp as e:
                result.failed += 1
                batch.dead.append(DeadLetter(entry, "dependency_unavailable", str(e)))
                continue
            except Exception as e:
                result.failed += 1
                error = f"{type(e).__name__}: {e}"
                if entry.deliveries >= self.max_deliveries:
                    batch.dead.append(DeadLetter(entry, "handler_failed", error))
                else:
                    log.warning(
                        "handler failed on %s entry %s (delivery %d of %d): %s",
                        self.stream.value,
                        delivery.entry_id,
                        entry.deliveries,
                        self.max_deliveries,
                        error[:200],
                    )
                continue
            batch.outputs.extend(outputs)
            batch.markers.extend(delivery.effect_markers)
            batch.acks.append(entry.entry_id)

    def _handle(
        self,
        handler: Handler,
        delivery: Delivery,
        batch: _Batch,
        stop: threading.Event | None,
    ) -> list[tuple[Stream, bytes]]:
        """Call `handler` until it returns; its outputs, encoded, with their derived ids.

        A transient error is retried with backoff on the same delivery: no re-read, so the
        group's delivery count does not climb while a dependency is down. The batch's pending
        entries are kept claimed meanwhile (XCLAIM JUSTID, which counts no delivery), so no
        other consumer reclaims them. After `transient_retry_s` of failures: `_GaveUp`.
        """
        return self._retried(lambda: self._outputs(delivery, handler(delivery)), batch, stop)

    def _retried(self, call: Callable[[], _T], batch: _Batch, stop: threading.Event | None) -> _T:
        """`call()`, retried with backoff while it raises a transient error (see `_handle`)."""
        first_failure: float | None = None
        attempts = 0
        while True:
            try:
                return call()
            except TRANSIENT_ERRORS as e:
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                attempts += 1
                waited = now - first_failure
                error = f"{type(e).__name__}: {e}"
                if waited >= self.transient_retry_s:
                    raise _GaveUp(
                        f"the handler's dependency stayed unavailable for {waited:.1f}s "
                        f"({attempts} attempts, transient_retry_s={self.transient_retry_s:g}); "
                        f"replay the message once it is back. Last error: {error}"
                    ) from e
                delay = min(_BACKOFF.backoff(attempts - 1), self.transient_retry_s - waited)
                log.warning(
                    "handler of %s (%d entries): dependency unavailable (%s); retry %d in %.2fs",
                    self.stream.value,
                    len(batch.entry_ids),
                    error[:200],
                    attempts,
                    delay,
                )
                self._wait(delay, batch.entry_ids, stop)

    def _wait(self, delay: float, entry_ids: Sequence[bytes], stop: threading.Event | None) -> None:
        """Sleep `delay` (`_Stopped` if `stop` is set), keeping the batch claimed meanwhile."""
        deadline = time.monotonic() + delay
        step = self.claim_idle_ms / 3000.0
        while True:
            self._keep_claimed(entry_ids)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            pause = min(left, step)
            if stop is not None:
                if stop.wait(pause):
                    raise _Stopped
            else:
                time.sleep(pause)

    def _outputs(self, delivery: Delivery, returned: object) -> list[tuple[Stream, bytes]]:
        """The handler's messages with ids derived from the input's, validated and encoded."""
        if returned is None:
            return []
        items = [returned] if isinstance(returned, Envelope) else returned
        if not isinstance(items, Iterable):
            raise ContractError(
                f"a handler returns messages or None, not {type(returned).__name__}"
            )
        parent = delivery.message.message_id
        encoded: list[tuple[Stream, bytes]] = []
        for index, message in enumerate(items):
            if not isinstance(message, Envelope):
                raise ContractError(f"handler output {index} is a {type(message).__name__}")
            stamped = restamped(
                message, message_id=derived_message_id(parent, stage=self.group, index=index)
            )
            encoded.append(
                (stamped.STREAM, self.bus.encode(stamped.STREAM, cast("Message", stamped)))
            )
        return encoded

    def _keep_claimed(self, entry_ids: Sequence[bytes]) -> None:
        """Reset the idle time of our pending entries without counting a delivery."""
        try:
            self._redis.xclaim(self._key, self.group, self.name, 0, list(entry_ids), justid=True)
        except redis.RedisError as e:  # the bus Redis may be what is down; the retry goes on
            log.warning("could not keep %d entries claimed: %s", len(entry_ids), e)

    def maintain(self) -> None:
        """Report trim losses of every group on the stream; trim behind the slowest group."""
        self.bus.check_trimmed(self.stream)
        if self.bus.trim_policy == "safe":
            self.bus.trim(self.stream)

    def run(
        self,
        handler: Handler,
        *,
        stop: threading.Event | None = None,
        max_messages: int | None = None,
        idle_timeout_s: float | None = None,
        batch_handler: BatchHandler | None = None,
    ) -> PollResult:
        """Poll until `stop` is set, `max_messages` were settled or nothing came for a while.

        Survives the bus Redis going away: connection errors back off with jitter (forever) and
        the consumer resumes by draining its own pending entries again.
        """
        total = PollResult()
        failures = 0
        idle_since = time.monotonic()
        while not (stop is not None and stop.is_set()):
            try:
                if self.maintenance_s >= 0 and time.monotonic() >= self._next_maintenance:
                    self._next_maintenance = time.monotonic() + self.maintenance_s
                    self.maintain()
                block = self.block_ms
                if idle_timeout_s is not None:
                    block = min(block, max(1, int(idle_timeout_s * 1000)))
                result = self.poll(handler, block_ms=block, stop=stop, batch_handler=batch_handler)
            except (TransientError, StoreError, redis.RedisError) as e:
                # Redis away (or refusing, e.g. OOM): back off and resume; never a crash loop
                failures += 1
                delay = _BACKOFF.backoff(failures - 1)
                log.warning(
                    "consumer %s of %s: bus Redis error (%s: %s); retrying in %.2fs",
                    self.name,
                    self.stream.value,
                    type(e).__name__,
                    str(e)[:200],
                    delay,
                )
                time.sleep(delay)
                self.restart()
                continue
            failures = 0
            total.add(result)
            now = time.monotonic()
            if result.fetched:
                idle_since = now
            elif idle_timeout_s is not None and now - idle_since >= idle_timeout_s:
                break
            if max_messages is not None and total.fetched >= max_messages:
                break
        return total

    def __iter__(self) -> Iterator[Delivery]:
        return self.messages()

    def messages(
        self, *, block_ms: int | None = None, stop: threading.Event | None = None
    ) -> Iterator[Delivery]:
        """Yield deliveries; each is acked when the loop body returns to the iterator.

        If the body raises, that delivery stays pending (redelivered after `claim_idle_ms`).
        Acks are flushed per batch and when the iterator is closed.
        """
        block = self.block_ms if block_ms is None else block_ms
        while not (stop is not None and stop.is_set()):
            entries = self._fetch(block)
            if not entries:
                if block <= 0:
                    return
                continue
            self._m_consumed.inc(len(entries))
            batch = _Batch([e.entry_id for e in entries])
            result = PollResult()
            try:
                for entry in entries:
                    delivery = self._sort(entry, batch, result)
                    if delivery is not None:
                        yield delivery
                        batch.markers.extend(delivery.effect_markers)
                        batch.acks.append(entry.entry_id)
            finally:
                self._settle(batch)
