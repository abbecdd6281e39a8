"""The event bus: Redis Streams, consumer groups, ack after the handler, redelivery, dead letters.

`Bus.publish` validates a message against its stream's contract and XADDs it. A `Consumer` reads
its group's entries (its own pending ones first after a restart, then new ones, plus entries other
consumers left idle, reclaimed with XAUTOCLAIM), hands each to a handler as a typed `Delivery` and
acks only after the handler returned. An entry that is malformed, or fails `max_deliveries`
deliveries, moves to the stream's dead-letter stream (acked in the same MULTI); the consumer goes
on. Delivery is at-least-once: `Bus.apply_once` makes a same-Redis effect happen once per message.

Trimming never loses work silently. With the default `trim_policy="safe"` XADD caps a stream at
twice the profile's `stream_maxlen` and consumers trim it back to `stream_maxlen` with XTRIM MINID
behind the slowest group, so only entries every group has acked go. When the hard cap does cut
entries a group had not read or acked, that is detected (group state read in the same MULTI as
XREADGROUP, pending entries whose ids are gone, the deleted ids XAUTOCLAIM returns on Redis 7) and
reported: a metric, a log line and a `stream_trimmed` risk event on `risk_events`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

import hiredis
import redis
from prometheus_client import Counter
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry

from tradeos_lab import contracts
from tradeos_lab.errors import ContractError, DependencyUnavailable, StoreError, TransientError
from tradeos_lab.keys import Keys, Stream
from tradeos_lab.settings import Settings

if TYPE_CHECKING:
    from redis.client import Pipeline

    from tradeos_lab.contracts import Message
    from tradeos_lab.tiers.bus_inspect import BusInspector

log = logging.getLogger(__name__)

FIELD = contracts.FIELD
_FIELD_B = FIELD.encode()
_ORIG_PREFIX = b"orig."
_ZERO_ID = b"0-0"
#: How long an `apply_once` marker outlives its message (longer than any redelivery can take).
EFFECT_MARKER_TTL_S = 7 * 24 * 3600
_TRIM_REPORT_TTL_S = 7 * 24 * 3600
_ERROR_TEXT_MAX = 1000
_PIPELINE_CHUNK = 1000

TrimPolicy = Literal["safe", "maxlen"]
DeadLetterReason = Literal["invalid", "handler_failed", "max_deliveries"]
LossKind = Literal["undelivered", "unacked"]

# ---- metrics ------------------------------------------------------------------------------------

PUBLISHED = Counter("tradeos_bus_published", "Messages published to a stream", ["stream"])
CONSUMED = Counter(
    "tradeos_bus_consumed", "Entries delivered to a consumer group", ["stream", "group"]
)
ACKED = Counter("tradeos_bus_acked", "Entries acknowledged after handling", ["stream", "group"])
DEAD_LETTERED = Counter(
    "tradeos_bus_dead_lettered",
    "Entries moved to the dead-letter stream",
    ["stream", "group", "reason"],
)
REDELIVERED = Counter(
    "tradeos_bus_redelivered",
    "Entries delivered again (own pending drained or reclaimed)",
    ["stream", "group"],
)
TRIMMED_LOST = Counter(
    "tradeos_bus_trimmed_lost",
    "Entries trimmed before a group delivered or acked them (1 per gap when the count is unknown)",
    ["stream", "group"],
)


# ---- stream ids ---------------------------------------------------------------------------------


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    """A stream id as a comparable (milliseconds, sequence) pair."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# ---- values handed to callers -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message handed to a handler; `deliveries` counts this delivery too."""

    stream: Stream
    group: str
    consumer: str
    entry_id: str
    message: Message
    deliveries: int

    @property
    def redelivered(self) -> bool:
        return self.deliveries > 1


@dataclass(frozen=True, slots=True)
class TrimLoss:
    """Entries a group lost to trimming; `count` is None when the server cannot tell (Redis 6.2)."""

    stream: Stream
    group: str
    kind: LossKind
    count: int | None
    entry_ids: tuple[str, ...]
    last_delivered_id: str
    first_entry_id: str | None
    detected_at: float


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


@dataclass(slots=True)
class _Entry:
    entry_id: bytes
    fields: dict[bytes, bytes]
    deliveries: int

    @property
    def gone(self) -> bool:
        # XADD needs at least one field: an empty entry is one trimmed away while pending
        return not self.fields


@dataclass(slots=True)
class _DeadLetter:
    entry: _Entry
    reason: DeadLetterReason
    error: str


Handler = Callable[[Delivery], object]


def _printable(text: str) -> str:
    """Text safe for a contract's text field: control characters (bar newline) become '?'."""
    return "".join(ch if ch.isprintable() or ch == "\n" else "?" for ch in text)


def _pcmd(pipe: Pipeline, *args: Any) -> Any:
    """Queue a raw command on a pipeline (redis-py leaves `execute_command` untyped there)."""
    return cast(Any, pipe).execute_command(*args)


def _translate(e: redis.RedisError, what: str) -> Exception:
    if isinstance(e, redis.ConnectionError | redis.TimeoutError):
        return DependencyUnavailable(f"bus Redis unreachable during {what}: {type(e).__name__}")
    return StoreError(f"bus Redis refused {what}: {e}")


#: hiredis packs a command in C; its stub types the argument as a 1-tuple.
pack_command = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)


class _Wire:
    """Raw round trips for the hot paths (publish, read, ack) on the client's own connections.

    On a unix socket redis-py's per-call machinery (pool checkout with a socket poll, hooks,
    reply callbacks) costs more than the round trip; commands are packed here with hiredis and
    replies read straight off the connection. Connection errors are retried with the client's
    backoff, as redis-py does; an error reply raises `ResponseError` after all replies are read,
    so the connection stays in step. Connections come from the client's pool and are kept, so
    closing the client closes them.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._retry = client.get_retry() or Retry(NoBackoff(), 0)
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def call(self, packed: bytes, replies: int) -> list[Any]:
        """Send pre-packed commands in one write and read their `replies`."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._pool.get_connection()
        in_step = False  # every reply read: the connection can serve the next call
        try:
            try:
                result = self._round_trip(conn, packed, replies)
            except (redis.ConnectionError, redis.TimeoutError):
                conn.disconnect()  # the server went away: retry as redis-py would
                result = self._retry.call_with_retry(
                    lambda: self._round_trip(conn, packed, replies),
                    lambda _error: conn.disconnect(),
                )
            in_step = True
            return result
        except redis.ResponseError:
            in_step = True  # an error reply, read like any other
            raise
        finally:
            if not in_step:
                conn.disconnect()  # interrupted mid-reply: never reuse it half-read
            with self._lock:
                self._idle.append(conn)

    @staticmethod
    def _round_trip(conn: Any, packed: bytes, replies: int) -> list[Any]:
        conn.send_packed_command([packed])
        if replies == 1:
            return [conn.read_response()]
        out: list[Any] = []
        error: redis.ResponseError | None = None
        for _ in range(replies):
            try:
                out.append(conn.read_response())
            except redis.ResponseError as e:
                error = error or e
                out.append(e)
        if error is not None:
            raise error
        return out

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self._pool.release(conn)


# ---- the bus ------------------------------------------------------------------------------------


class Bus:
    """Publishes validated messages and builds consumers over one bus Redis."""

    def __init__(
        self,
        redis: redis.Redis,
        *,
        keys: Keys,
        settings: Settings,
        trim_policy: TrimPolicy = "safe",
        producer: str | None = None,
    ) -> None:
        self.redis = redis
        self._exec: Callable[..., Any] = redis.execute_command
        self._wire = _Wire(redis)
        self.keys = keys
        self.settings = settings
        self.trim_policy: TrimPolicy = trim_policy
        self.producer = producer or settings.service_name
        limits = settings.limits
        #: Entries a stream keeps for history once every group has acked them.
        self.retention = limits.stream_maxlen
        #: XADD's MAXLEN ~: the cap past which even unread entries go (and are reported).
        self.hard_cap = limits.stream_maxlen * (2 if trim_policy == "safe" else 1)
        self.dead_letter_maxlen = limits.dead_letter_maxlen
        self._stream_keys = {s: keys.stream(s) for s in Stream}
        self._published = {s: PUBLISHED.labels(stream=s.value) for s in Stream}
        #: The latest trim losses this process detected, newest last (for notebooks).
        self.losses: deque[TrimLoss] = deque(maxlen=1000)

    # ---- publishing -----------------------------------------------------------------------------

    def publish(self, stream: Stream | str, message: Message) -> str:
        """Validate `message` against `stream`'s contract and append it; returns the entry id.

        Raises `ContractError` (nothing published) or `DependencyUnavailable`. A retry after a lost
        reply can append the message twice: consumers dedup by `message_id` (`apply_once`).
        """
        s = stream if type(stream) is Stream else Stream(stream)
        raw = self._encode(s, message)
        packed = pack_command(
            ("XADD", self._stream_keys[s], "MAXLEN", "~", self.hard_cap, "*", FIELD, raw)
        )
        try:
            (entry_id,) = self._wire.call(packed, 1)
        except redis.RedisError as e:
            raise _translate(e, f"XADD to {s.value}") from e
        self._published[s].inc()
        return _s(entry_id)

    def publish_many(self, stream: Stream | str, messages: Iterable[Message]) -> list[str]:
        """Validate every message first (one bad one publishes none), then XADD in pipelines."""
        s = Stream(stream)
        raws = [self._encode(s, m) for m in messages]
        key, cap = self._stream_keys[s], self.hard_cap
        ids: list[str] = []
        try:
            for start in range(0, len(raws), _PIPELINE_CHUNK):
                chunk = raws[start : start + _PIPELINE_CHUNK]
                packed = b"".join(
                    [pack_command(("XADD", key, "MAXLEN", "~", cap, "*", FIELD, r)) for r in chunk]
                )
                ids.extend(_s(i) for i in self._wire.call(packed, len(chunk)))
        except redis.RedisError as e:
            raise _translate(e, f"XADD to {s.value} ({len(ids)} of {len(raws)} published)") from e
        finally:
            self._published[s].inc(len(ids))
        return ids

    @staticmethod
    def _encode(stream: Stream, message: Message) -> bytes:
        raw = contracts.encode(message)  # ContractError for a non-message or one over the limit
        if message.STREAM is not stream:  # the stream's contract: which schemas it carries
            raise ContractError(
                f"schema {message.schema_name} belongs on stream {message.STREAM.value}, "
                f"not {stream.value} (nothing was published)"
            )
        return raw

    @staticmethod
    def decode(stream: Stream, fields: dict[bytes, bytes]) -> Message:
        """The typed message of one stream entry; `ContractError` when it is not a valid one."""
        raw = fields.get(_FIELD_B)
        if raw is None:
            names = ", ".join(repr(k)[2:-1] for k in list(fields)[:5])
            raise ContractError(f"entry has no {FIELD!r} field (fields: {names[:200]})")
        if len(fields) != 1:
            raise ContractError(f"entry has {len(fields)} fields; a bus entry has only {FIELD!r}")
        return contracts.decode(raw, stream=stream)

    def close(self) -> None:
        """Return the bus's hot-path connections to the client's pool."""
        self._wire.close()

    # ---- groups and consumers -------------------------------------------------------------------

    def ensure_group(self, stream: Stream | str, group: str, *, start_id: str = "0") -> bool:
        """Create `group` on `stream` (and the stream) unless it exists; True when created.

        `start_id="0"` lets a new group read everything the stream still holds; "$" only what
        comes after.
        """
        s = Stream(stream)
        try:
            self.redis.xgroup_create(
                self._stream_keys[s], Keys.group(group), id=start_id, mkstream=True
            )
        except redis.ResponseError as e:
            if "BUSYGROUP" in str(e):
                return False
            raise _translate(e, f"XGROUP CREATE on {s.value}") from e
        except redis.RedisError as e:
            raise _translate(e, f"XGROUP CREATE on {s.value}") from e
        return True

    def consumer(
        self,
        stream: Stream | str,
        group: str,
        name: str,
        *,
        count: int = 256,
        block_ms: int = 1000,
        start_id: str = "0",
        maintenance_s: float = 5.0,
    ) -> Consumer:
        """A consumer `name` in `group`; keep `name` stable so a restart drains its pending."""
        return Consumer(
            self,
            Stream(stream),
            Keys.group(group),
            Keys.group(name),
            count=count,
            block_ms=block_ms,
            start_id=start_id,
            maintenance_s=maintenance_s,
        )

    # ---- idempotent effects ---------------------------------------------------------------------

    def apply_once(
        self,
        delivery: Delivery,
        effect: Callable[[Pipeline], object],
        *,
        ack: bool = False,
        ttl_s: int = EFFECT_MARKER_TTL_S,
    ) -> bool:
        """Run `effect` (commands queued on a MULTI pipeline) at most once per message and group.

        The effect and a marker keyed by the message id commit in one MULTI, so a redelivery
        (a crash before the ack, a reclaim, a producer's retried XADD) finds the marker and skips
        the effect. With `ack=True` the XACK joins the same MULTI. Returns True when the effect
        ran now, False when it had already run. For effects in another store, keep the message id
        in a unique column there instead.
        """
        marker = self.keys.effect_done(delivery.group, delivery.message.message_id)
        key = self._stream_keys[delivery.stream]
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        cast(Any, pipe).watch(marker)
                        if pipe.exists(marker):
                            pipe.multi()
                            if ack:
                                pipe.xack(key, delivery.group, delivery.entry_id)
                            pipe.execute()
                            return False
                        pipe.multi()
                        effect(pipe)
                        pipe.set(marker, delivery.entry_id, ex=ttl_s)
                        if ack:
                            pipe.xack(key, delivery.group, delivery.entry_id)
                        pipe.execute()
                        return True
                    except redis.WatchError:
                        continue
        except redis.RedisError as e:
            raise _translate(e, "an idempotent effect") from e

    # ---- dead letters ---------------------------------------------------------------------------

    def _dead_letter_fields(
        self, stream: Stream, group: str, consumer: str, dead: _DeadLetter
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
            fields[name if name == _FIELD_B else _ORIG_PREFIX + name] = value
        return fields

    def _queue_dead_letters(
        self,
        pipe: Pipeline,
        stream: Stream,
        group: str,
        consumer: str,
        dead: Sequence[_DeadLetter],
    ) -> None:
        dlq = self.keys.dead_letter(stream)
        for d in dead:
            pipe.xadd(
                dlq,
                self._dead_letter_fields(stream, group, consumer, d),  # type: ignore[arg-type]
                maxlen=self.dead_letter_maxlen,
                approximate=True,
            )
            event = self._dead_letter_event(stream, group, d)
            if event is not None:
                _pcmd(
                    pipe,
                    "XADD",
                    self._stream_keys[Stream.RISK_EVENTS],
                    "MAXLEN",
                    "~",
                    self.hard_cap,
                    "*",
                    FIELD,
                    contracts.encode(event),
                )
            DEAD_LETTERED.labels(stream=stream.value, group=group, reason=d.reason).inc()
            log.warning(
                "dead-lettered %s entry %s for group %s after %d deliveries: %s (%s)",
                stream.value,
                _s(d.entry.entry_id),
                group,
                d.entry.deliveries,
                d.reason,
                d.error[:200],
            )

    def _dead_letter_event(self, stream: Stream, group: str, dead: _DeadLetter) -> Message | None:
        """A `dead_letter` risk event, published in the MULTI that moves the entry."""
        entry_id = _s(dead.entry.entry_id)
        try:
            return self._risk_event(
                contracts.RiskKind.DEAD_LETTER,
                stream,
                _printable(
                    f"{stream.value} entry {entry_id} moved to the dead-letter stream by group "
                    f"{group} after {dead.entry.deliveries} deliveries: {dead.reason}: "
                    f"{dead.error[:_ERROR_TEXT_MAX]}"
                ),
                {
                    "stream": stream.value,
                    "group": group,
                    "entry_id": entry_id,
                    "reason": dead.reason,
                    "deliveries": dead.entry.deliveries,
                    "dead_letter_stream": self.keys.dead_letter(stream),
                },
            )
        except ContractError:
            log.exception("could not build the dead_letter risk event")
            return None

    def replay_dead_letter(self, stream: Stream | str, dead_letter_id: str) -> str:
        """Re-publish a dead-letter entry to its stream and drop it from the dead-letter stream.

        The message is validated first: a `ContractError` leaves both streams untouched.
        """
        s = Stream(stream)
        dlq = self.keys.dead_letter(s)
        rows: Any = self.redis.xrange(dlq, dead_letter_id, dead_letter_id)
        if not rows:
            raise StoreError(f"no dead-letter entry {dead_letter_id} for {s.value}")
        _, fields = rows[0]
        raw = fields.get(_FIELD_B)
        if raw is None:
            raise ContractError(f"dead-letter entry {dead_letter_id} holds no {FIELD!r} field")
        self.decode(s, {_FIELD_B: raw})
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(self._stream_keys[s], {FIELD: raw}, maxlen=self.hard_cap, approximate=True)
        pipe.xdel(dlq, dead_letter_id)
        try:
            new_id, _ = pipe.execute()
        except redis.RedisError as e:
            raise _translate(e, f"replay to {s.value}") from e
        self._published[s].inc()
        return _s(new_id)

    # ---- trimming -------------------------------------------------------------------------------

    def trim(self, stream: Stream | str) -> int:
        """XTRIM MINID ~ behind the slowest group, down to `retention` entries; returns removed.

        Only entries every group has delivered and acked are removed; with no group nothing is
        (the XADD hard cap still bounds the stream).
        """
        s = Stream(stream)
        key = self._stream_keys[s]
        try:
            excess = int(self.redis.xlen(key)) - self.retention
            if excess <= 0:
                return 0
            safe = self._safe_trim_id(key)
            if safe is None:
                return 0
            removed = self._exec("XTRIM", key, "MINID", "~", safe, "LIMIT", excess)
        except redis.RedisError as e:
            raise _translate(e, f"XTRIM on {s.value}") from e
        return int(removed)

    def _safe_trim_id(self, key: str) -> str | None:
        groups = self.redis.xinfo_groups(key)
        if not groups:
            return None
        safe: tuple[int, int] | None = None
        for g in groups:
            point = parse_id(g["last-delivered-id"])
            if g["pending"]:
                summary = self.redis.xpending(key, g["name"])
                point = min(point, parse_id(summary["min"]))
            safe = point if safe is None else min(safe, point)
        assert safe is not None
        return f"{safe[0]}-{safe[1]}"

    # ---- trim-loss detection --------------------------------------------------------------------

    def check_trimmed(self, stream: Stream | str) -> list[TrimLoss]:
        """Find and report every group's entries trimmed before it delivered or acked them.

        Pending entries whose ids are gone are acked (they can never be handled) and counted.
        A gap is reported once, however often this runs.
        """
        s = Stream(stream)
        key = self._stream_keys[s]
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.xinfo_stream(key)
            pipe.xinfo_groups(key)
            info, groups = pipe.execute()
        except redis.ResponseError as e:
            if "no such key" in str(e):
                return []
            raise _translate(e, f"XINFO on {s.value}") from e
        except redis.RedisError as e:
            raise _translate(e, f"XINFO on {s.value}") from e
        losses: list[TrimLoss] = []
        for g in groups:
            group = _s(g["name"])
            loss = self._undelivered_loss(s, group, info, g)
            if loss is not None:
                losses.append(loss)
            losses.extend(self._reap_gone_pending(s, group, info))
        return losses

    def _undelivered_loss(
        self, stream: Stream, group: str, info: dict[str, Any], g: dict[str, Any]
    ) -> TrimLoss | None:
        """Report entries trimmed after `g`'s last-delivered id but before it read them."""
        last = g["last-delivered-id"]
        first_entry = info.get("first-entry")
        first = first_entry[0] if first_entry else None
        if first is not None:
            behind = parse_id(last) < parse_id(first)
        else:
            behind = parse_id(last) < parse_id(info["last-generated-id"])
        if not behind:
            return None
        count: int | None
        if "entries-added" in info:  # Redis >= 7 counts exactly
            read = g.get("entries-read")
            if read is None:
                return None  # the group never read, or was moved with XGROUP SETID
            count = int(info["entries-added"]) - int(read) - int(info["length"])
            if count <= 0:
                return None
        else:  # Redis 6.2: a group behind the first entry has lost entries, how many is unknown
            if last == _ZERO_ID:
                return None
            count = None
        marker = self.keys.trim_loss_reported(stream, group, _s(last))
        if not self.redis.set(marker, 1, nx=True, ex=_TRIM_REPORT_TTL_S):
            return None
        loss = TrimLoss(
            stream=stream,
            group=group,
            kind="undelivered",
            count=count,
            entry_ids=(),
            last_delivered_id=_s(last),
            first_entry_id=_s(first) if first is not None else None,
            detected_at=time.time(),
        )
        self._report(loss)
        return loss

    def _reap_gone_pending(
        self, stream: Stream, group: str, info: dict[str, Any] | None = None
    ) -> list[TrimLoss]:
        """Ack and report `group`'s pending entries that trimming removed from the stream."""
        key = self._stream_keys[stream]
        if info is None:
            info = self.redis.xinfo_stream(key)
        first_entry = info.get("first-entry")
        upper = "(" + _s(first_entry[0]) if first_entry else "+"
        losses: list[TrimLoss] = []
        while True:
            rows: Any = self.redis.xpending_range(key, group, "-", upper, 1000)
            if not rows:
                return losses
            ids = [r["message_id"] for r in rows]
            acked = int(self.redis.xack(key, group, *ids))
            if acked:
                losses.append(self._report_unacked(stream, group, ids, acked, first_entry))
            if len(rows) < 1000:
                return losses

    def _report_unacked(
        self,
        stream: Stream,
        group: str,
        ids: Sequence[bytes],
        count: int,
        first_entry: Any = None,
    ) -> TrimLoss:
        loss = TrimLoss(
            stream=stream,
            group=group,
            kind="unacked",
            count=count,
            entry_ids=tuple(_s(i) for i in ids[:100]),
            last_delivered_id="",
            first_entry_id=_s(first_entry[0]) if first_entry else None,
            detected_at=time.time(),
        )
        self._report(loss)
        return loss

    def _report(self, loss: TrimLoss) -> None:
        """Metric, log line, risk event; reporting never breaks the consumer that detected it."""
        self.losses.append(loss)
        TRIMMED_LOST.labels(stream=loss.stream.value, group=loss.group).inc(loss.count or 1)
        how_many = "an unknown number of" if loss.count is None else str(loss.count)
        log.error(
            "%s %s entries of %s were trimmed before group %s %s them",
            how_many,
            loss.kind,
            loss.stream.value,
            loss.group,
            "read" if loss.kind == "undelivered" else "acked",
        )
        try:
            what = "read" if loss.kind == "undelivered" else "acked"
            event = self._risk_event(
                contracts.RiskKind.STREAM_TRIMMED,
                loss.stream,
                f"{how_many} entries of {loss.stream.value} were trimmed before group "
                f"{loss.group} {what} them",
                {
                    "stream": loss.stream.value,
                    "group": loss.group,
                    "loss": loss.kind,
                    "count": loss.count,
                    "first_entry_id": loss.first_entry_id,
                    "last_delivered_id": loss.last_delivered_id or None,
                    "entry_ids": " ".join(loss.entry_ids)[:256] or None,
                },
            )
            self.publish(Stream.RISK_EVENTS, event)
        except Exception:  # the metric and the log line above already carry the loss
            log.exception("could not publish the stream_trimmed risk event")

    def _risk_event(
        self,
        kind: contracts.RiskKind,
        stream: Stream,
        detail: str,
        data: dict[str, Any],
    ) -> Message:
        payload = contracts.RiskEvent(
            kind=kind,
            severity=contracts.Severity.CRITICAL,
            scope=f"stream:{stream.value}",
            detail=detail,
            data=data,
            ts=datetime.now(UTC),
        )
        return contracts.new_message(payload, producer=self.producer)

    # ---- inspection -----------------------------------------------------------------------------

    @property
    def inspect(self) -> BusInspector:
        """Streams, groups, consumers, lag, pending, dead letters as DataFrames (notebooks, CLI)."""
        from tradeos_lab.tiers.bus_inspect import BusInspector

        return BusInspector(self)


# ---- the consumer -------------------------------------------------------------------------------


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
        self._key = bus.keys.stream(stream)
        self._redis = bus.redis
        self._exec: Callable[..., Any] = bus.redis.execute_command
        self._group_ready = False
        self._draining = True
        self._drain_cursor: bytes | str = "0"
        self._claim_cursor: bytes | str = _ZERO_ID
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
        self._claim_cursor = _ZERO_ID
        self._next_claim = 0.0

    def _fetch(self, block_ms: int) -> list[_Entry]:
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

    def _claim(self) -> list[_Entry]:
        reply = self._exec(
            "XAUTOCLAIM",
            self._key,
            self.group,
            self.name,
            self.claim_idle_ms,
            self._claim_cursor,
            "COUNT",
            self.count,
        )
        cursor, claimed = reply[0], reply[1]
        self._claim_cursor = cursor
        if cursor in (_ZERO_ID, "0-0"):
            self._next_claim = time.monotonic() + min(self.claim_idle_ms / 2000.0, 1.0)
        if len(reply) > 2 and reply[2]:  # Redis 7: ids trimmed while pending, already un-pended
            self._lost += len(reply[2])
            self.bus._report_unacked(self.stream, self.group, reply[2], len(reply[2]))
        found = [(eid, fields) for eid, fields in claimed if eid is not None]
        if len(found) < len(claimed):  # Redis 6.2 claims trimmed entries as nil: reap them
            reaped = self.bus._reap_gone_pending(self.stream, self.group)
            self._lost += sum(loss.count or 0 for loss in reaped)
        return self._with_counts(found)

    def _drain(self) -> list[_Entry]:
        reply = self._exec(
            "XREADGROUP",
            "GROUP",
            self.group,
            self.name,
            "COUNT",
            self.count,
            "STREAMS",
            self._key,
            self._drain_cursor,
        )
        rows = reply[0][1] if reply else []
        if not rows:
            self._draining = False
            return []
        self._drain_cursor = rows[-1][0]
        return self._with_counts(rows)

    def _with_counts(self, rows: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> list[_Entry]:
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
        entries = [_Entry(eid, fields or {}, counts.get(eid, 2)) for eid, fields in rows]
        self._m_redelivered.inc(len(entries))
        return entries

    def _read_new(self, block_ms: int) -> list[_Entry]:
        # The group's state is read in the same MULTI as the XREADGROUP: once a read jumps past a
        # trimmed gap the gap can no longer be seen, so it is checked right before each read.
        pipe = self._redis.pipeline(transaction=True)
        pipe.xinfo_stream(self._key)
        pipe.xinfo_groups(self._key)
        _pcmd(
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
        info, groups, reply = pipe.execute()
        for g in groups:
            if _s(g["name"]) == self.group:
                self.bus._undelivered_loss(self.stream, self.group, info, g)
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
        return [_Entry(eid, fields, 1) for eid, fields in rows]

    # ---- settling -------------------------------------------------------------------------------

    def _triage(self, entry: _Entry, result: PollResult) -> Message | _DeadLetter | None:
        """The message to hand over, a dead letter, or None for an entry trimmed while pending."""
        if entry.gone:
            result.lost += 1
            return None
        if entry.deliveries > self.max_deliveries:
            return _DeadLetter(
                entry,
                "max_deliveries",
                f"delivered {entry.deliveries} times without an ack "
                f"(max_deliveries={self.max_deliveries})",
            )
        try:
            return self.bus.decode(self.stream, entry.fields)
        except ContractError as e:
            return _DeadLetter(entry, "invalid", f"{type(e).__name__}: {e}")

    def _settle(self, acks: list[bytes], dead: list[_DeadLetter], gone: list[bytes]) -> None:
        """XACK the handled entries and move dead letters, in one MULTI."""
        if not acks and not dead and not gone:
            return
        if not dead and not gone:
            self.bus._wire.call(pack_command(("XACK", self._key, self.group, *acks)), 1)
            self._m_acked.inc(len(acks))
            return
        pipe = self._redis.pipeline(transaction=True)
        self.bus._queue_dead_letters(pipe, self.stream, self.group, self.name, dead)
        pipe.xack(self._key, self.group, *acks, *(d.entry.entry_id for d in dead), *gone)
        pipe.execute()
        self._m_acked.inc(len(acks))
        if gone:
            self.bus._report_unacked(self.stream, self.group, gone, len(gone))

    def poll(self, handler: Handler, *, block_ms: int | None = None) -> PollResult:
        """Fetch one batch, hand each message to `handler`, ack those it returned from.

        A handler exception leaves the entry pending: it is redelivered after `claim_idle_ms`, and
        dead-lettered once it has failed `max_deliveries` deliveries. A transient error (Redis
        unreachable) stops the batch and propagates, so `run` can back off.
        """
        result = PollResult()
        entries = self._fetch(self.block_ms if block_ms is None else block_ms)
        result.lost, self._lost = self._lost, 0
        if not entries:
            return result
        self._m_consumed.inc(len(entries))
        acks: list[bytes] = []
        dead: list[_DeadLetter] = []
        gone: list[bytes] = []
        try:
            for entry in entries:
                triaged = self._triage(entry, result)
                if triaged is None:
                    gone.append(entry.entry_id)
                    continue
                if isinstance(triaged, _DeadLetter):
                    dead.append(triaged)
                    continue
                delivery = Delivery(
                    self.stream,
                    self.group,
                    self.name,
                    _s(entry.entry_id),
                    triaged,
                    entry.deliveries,
                )
                try:
                    handler(delivery)
                except (TransientError, redis.ConnectionError, redis.TimeoutError):
                    raise
                except Exception as e:
                    result.failed += 1
                    error = f"{type(e).__name__}: {e}"
                    if entry.deliveries >= self.max_deliveries:
                        dead.append(_DeadLetter(entry, "handler_failed", error))
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
                acks.append(entry.entry_id)
        finally:
            self._settle(acks, dead, gone)
        result.handled = len(acks)
        result.dead_lettered = len(dead)
        return result

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
    ) -> PollResult:
        """Poll until `stop` is set, `max_messages` were settled or nothing came for a while.

        Survives the bus Redis going away: connection errors back off with jitter (forever) and
        the consumer resumes by draining its own pending entries again.
        """
        total = PollResult()
        backoff = ExponentialWithJitterBackoff(base=0.05, cap=2.0)
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
                result = self.poll(handler, block_ms=block)
            except (TransientError, StoreError, redis.RedisError) as e:
                # Redis away (or refusing, e.g. OOM): back off and resume; never a crash loop
                failures += 1
                delay = backoff.compute(failures)
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
            acks: list[bytes] = []
            dead: list[_DeadLetter] = []
            gone: list[bytes] = []
            result = PollResult()
            try:
                for entry in entries:
                    triaged = self._triage(entry, result)
                    if triaged is None:
                        gone.append(entry.entry_id)
                    elif isinstance(triaged, _DeadLetter):
                        dead.append(triaged)
                    else:
                        yield Delivery(
                            self.stream,
                            self.group,
                            self.name,
                            _s(entry.entry_id),
                            triaged,
                            entry.deliveries,
                        )
                        acks.append(entry.entry_id)
            finally:
                self._settle(acks, dead, gone)
