"""The bus: validated publishing, groups, idempotent effects and trimming over one bus Redis.

`Bus.publish` validates a message against its stream's contract and XADDs it. Outputs commit
together with an ack: `commit` XADDs encoded outputs and other commands (a consumer's XACK) in
one MULTI/EXEC, and `queue_publish` queues the XADD on a caller's redis-py MULTI. Consumers
(`Bus.consumer`) live in `consumer.py`, dead letters in `dead_letters.py`, trim-loss reporting in
`trim_loss.py`.

Trimming never loses work silently. With the default `trim_policy="safe"` XADD caps a stream at
twice the profile's `stream_maxlen` and consumers trim it back to `stream_maxlen` with XTRIM MINID
behind the slowest group, so only entries every group has acked go; what the hard cap cuts anyway
is reported by `trim_loss.py`.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import redis

from tradeos_lab import contracts
from tradeos_lab.errors import ContractError
from tradeos_lab.keys import Keys, Stream
from tradeos_lab.settings import Settings
from tradeos_lab.tiers.bus.consumer import Consumer
from tradeos_lab.tiers.bus.dead_letters import DeadLetters
from tradeos_lab.tiers.bus.inspection import BusInspector
from tradeos_lab.tiers.bus.metrics import PUBLISHED
from tradeos_lab.tiers.bus.trim_loss import ADDED_FIELD, TrimLoss, TrimLossReporter, base_field
from tradeos_lab.tiers.bus.wire import (
    FIELD,
    FIELD_B,
    Wire,
    pack_command,
    parse_id,
    queue_command,
    text,
    translate_redis_error,
)

if TYPE_CHECKING:
    from redis.client import Pipeline

    from tradeos_lab.contracts import Message
    from tradeos_lab.tiers.bus.consumer import Delivery

#: How long an `apply_once` marker lives while its entry is still unacked: a consumer may be down
#: that long and still find, on restart, that the effect was applied.
EFFECT_PENDING_TTL_S = 7 * 24 * 3600
_PIPELINE_CHUNK = 1000
_MULTI = pack_command(("MULTI",))
_EXEC = pack_command(("EXEC",))
# Redis 6.2: the XADDs of a batch and the bus's count of entries added, in one atomic script
# (Redis 7 counts a stream's entries itself). ARGV: the hard cap, then the encoded messages.
_COUNTED_XADD_LUA = f"""
local ids = {{}}
for i = 2, #ARGV do
    ids[i - 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', '{FIELD}', ARGV[i])
end
redis.call('HINCRBY', KEYS[2], '{ADDED_FIELD}', #ARGV - 1)
return ids
"""
_COUNTED_XADD_SHA = hashlib.sha1(_COUNTED_XADD_LUA.encode(), usedforsecurity=False).hexdigest()

TrimPolicy = Literal["safe", "maxlen"]


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
        self.wire = Wire(redis)
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
        self._count_one = {
            s: pack_command(("HINCRBY", keys.trim_loss_reported(s), ADDED_FIELD, 1)) for s in Stream
        }
        self._server_major: int | None = None
        self.dead_letters = DeadLetters(self)
        self.trim_loss = TrimLossReporter(self)

    def stream_key(self, stream: Stream) -> str:
        """The Redis key of `stream` under this bus's namespace."""
        return self._stream_keys[stream]

    @property
    def losses(self) -> deque[TrimLoss]:
        """The latest trim losses this process detected, newest last (for notebooks)."""
        return self.trim_loss.losses

    # ---- publishing -----------------------------------------------------------------------------

    def publish(self, stream: Stream | str, message: Message) -> str:
        """Validate `message` against `stream`'s contract and append it; returns the entry id.

        Raises `ContractError` (nothing published) or `DependencyUnavailable`. A retry after a lost
        reply can append the message twice: consumers dedup by `message_id` (`apply_once`).
        """
        s = stream if type(stream) is Stream else Stream(stream)
        packed = self._packed_xadd(s, self.encode(s, message))
        try:
            if self.counts_entries():
                (entry_id,) = self.wire.call(packed, 1)
            else:  # Redis 6.2: with the bus's count, in one MULTI (cheaper than a script here)
                packed = _MULTI + packed + self._count_one[s] + _EXEC
                entry_id = self.wire.call(packed, 4)[3][0]
        except redis.RedisError as e:
            raise translate_redis_error(e, f"XADD to {s.value}") from e
        self._published[s].inc()
        return text(entry_id)

    def publish_many(self, stream: Stream | str, messages: Iterable[Message]) -> list[str]:
        """Validate every message first (one bad one publishes none), then XADD in pipelines."""
        s = Stream(stream)
        raws = [self.encode(s, m) for m in messages]
        counts = self.counts_entries()
        ids: list[str] = []
        try:
            for start in range(0, len(raws), _PIPELINE_CHUNK):
                chunk = raws[start : start + _PIPELINE_CHUNK]
                if not counts:
                    ids.extend(text(i) for i in self._counted_xadd(s, chunk))
                    continue
                packed = b"".join([self._packed_xadd(s, r) for r in chunk])
                ids.extend(text(i) for i in self.wire.call(packed, len(chunk)))
        except redis.RedisError as e:
            raise translate_redis_error(
                e, f"XADD to {s.value} ({len(ids)} of {len(raws)} published)"
            ) from e
        finally:
            self._published[s].inc(len(ids))
        return ids

    def commit(self, outputs: Sequence[tuple[Stream, bytes]], then: Sequence[bytes]) -> None:
        """XADD `outputs` (messages `encode` made, each with its stream), then run `then` (commands
        packed with `pack_command`), all in one MULTI/EXEC: a stage's outputs with the XACK of
        their inputs.

        Packed here and sent on the hot-path connection (`Wire`): a batch commits once per
        fetch in every stage, and redis-py's pipeline costs about four times the CPU for it.
        A command Redis refuses as it is queued (OOM, say) commits nothing: `StoreError`.
        """
        parts = [_MULTI, *(self._packed_xadd(s, raw) for s, raw in outputs)]
        added = Counter(s for s, _ in outputs)
        if added and not self.counts_entries():  # Redis 6.2: the bus's count, in the same MULTI
            parts.extend(
                pack_command(("HINCRBY", self.keys.trim_loss_reported(s), ADDED_FIELD, n))
                for s, n in added.items()
            )
        parts.extend(then)
        parts.append(_EXEC)
        try:
            executed = self.wire.call(b"".join(parts), len(parts))[-1]
        except redis.RedisError as e:
            raise translate_redis_error(e, f"committing {len(outputs)} outputs") from e
        for s, n in added.items():
            self._published[s].inc(n)
        failed = next((r for r in executed if isinstance(r, redis.ResponseError)), None)
        if failed is not None:  # failed as it ran (a wrong type): the rest did commit
            raise translate_redis_error(failed, f"committing {len(outputs)} outputs")

    def _packed_xadd(self, stream: Stream, raw: bytes) -> bytes:
        return pack_command(
            ("XADD", self._stream_keys[stream], "MAXLEN", "~", self.hard_cap, "*", FIELD, raw)
        )

    def queue_publish(self, pipe: Pipeline, stream: Stream | str, message: Message) -> None:
        """Validate `message` and queue its XADD on `pipe`, a MULTI the caller executes.

        The way to publish together with other writes, e.g. a stage's outputs with the XACK of
        its input, or an `apply_once` effect. Raises `ContractError` (nothing queued).
        """
        s = stream if type(stream) is Stream else Stream(stream)
        self.queue_encoded(pipe, s, self.encode(s, message))

    def queue_encoded(self, pipe: Pipeline, stream: Stream, raw: bytes) -> None:
        """Queue the XADD of a message `encode` already validated for `stream`."""
        queue_command(
            pipe, "XADD", self._stream_keys[stream], "MAXLEN", "~", self.hard_cap, "*", FIELD, raw
        )
        if not self.counts_entries():
            pipe.hincrby(self.keys.trim_loss_reported(stream), ADDED_FIELD, 1)
        self._published[stream].inc()

    def _counted_xadd(self, stream: Stream, raws: list[bytes]) -> list[bytes]:
        """Redis 6.2: XADD `raws` and add their number to the bus's count, atomically; the ids.

        6.2 does not count the entries a stream ever held, so the bus counts them itself, in the
        same script as the XADDs (exact: both or neither): it is how a group that never read
        learns that entries it should have read were trimmed (`trim_loss.ADDED_FIELD`). One
        script per batch costs less than a MULTI of it (one reply instead of one per XADD).
        """
        keys = (self._stream_keys[stream], self.keys.trim_loss_reported(stream))
        try:
            packed = pack_command(("EVALSHA", _COUNTED_XADD_SHA, 2, *keys, self.hard_cap, *raws))
            (ids,) = self.wire.call(packed, 1)
        except redis.exceptions.NoScriptError:  # a restarted server: send the script itself
            packed = pack_command(("EVAL", _COUNTED_XADD_LUA, 2, *keys, self.hard_cap, *raws))
            (ids,) = self.wire.call(packed, 1)
        return cast(list[bytes], ids)

    @staticmethod
    def encode(stream: Stream, message: Message) -> bytes:
        """`message` encoded for `stream`; `ContractError` when it is not one of its contract."""
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
        raw = fields.get(FIELD_B)
        if raw is None:
            names = ", ".join(repr(k)[2:-1] for k in list(fields)[:5])
            raise ContractError(f"entry has no {FIELD!r} field (fields: {names[:200]})")
        if len(fields) != 1:
            raise ContractError(f"entry has {len(fields)} fields; a bus entry has only {FIELD!r}")
        return contracts.decode(raw, stream=stream)

    def close(self) -> None:
        """Return the bus's hot-path connections to the client's pool."""
        self.wire.close()

    # ---- groups and consumers -------------------------------------------------------------------

    def ensure_group(self, stream: Stream | str, group: str, *, start_id: str = "0") -> bool:
        """Create `group` on `stream` (and the stream) unless it exists; True when created.

        `start_id="0"` lets a new group read everything the stream still holds; "$" only what
        comes after. The group is positioned so that trimming it later can be told apart from
        trimming before it existed: on Redis 7 its read counter starts at the entries already
        gone (ENTRIESREAD); on 6.2 it starts at an explicit id (just before the first entry the
        stream holds, else its last generated id) recorded in the trim-loss bookkeeping with the
        bus's count of entries added, so its losses are counted until it first reads.
        """
        s = Stream(stream)
        key = self._stream_keys[s]
        bookkeeping = self.keys.trim_loss_reported(s)
        name = Keys.group(group)
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        cast(Any, pipe).watch(key)
                        position = self._group_position(pipe, key, name, start_id)
                        if position is None:
                            return False
                        base = None if self.counts_entries() else self._group_base(pipe, s, key)
                        pipe.multi()
                        queue_command(pipe, "XGROUP", "CREATE", key, name, *position, "MKSTREAM")
                        # a new group has not been told of any loss (one of the same name may have)
                        pipe.hdel(bookkeeping, *self.trim_loss.forget_fields(name))
                        if base is not None and start_id in ("0", "$"):
                            held = base[1] if start_id == "0" else 0
                            pipe.hset(
                                bookkeeping, base_field(name), f"{position[0]} {base[0] - held}"
                            )
                        pipe.execute()
                        break
                    except redis.WatchError:
                        continue
        except redis.ResponseError as e:
            if "BUSYGROUP" in str(e):
                return False
            raise translate_redis_error(e, f"XGROUP CREATE on {s.value}") from e
        except redis.RedisError as e:
            raise translate_redis_error(e, f"XGROUP CREATE on {s.value}") from e
        return True

    def drop_group(self, stream: Stream | str, group: str) -> bool:
        """Destroy `group` on `stream` and its trim-loss bookkeeping; True when it existed.

        For a group nothing reads any more: left behind, it would hold back trimming ("safe")
        and report the entries trimmed past it as lost.
        """
        s = Stream(stream)
        name = Keys.group(group)
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                queue_command(pipe, "XGROUP", "DESTROY", self._stream_keys[s], name)
                pipe.hdel(self.keys.trim_loss_reported(s), *self.trim_loss.forget_fields(name))
                destroyed, _ = pipe.execute()
        except redis.ResponseError as e:
            if "requires the key to exist" in str(e):  # the stream itself does not exist
                return False
            raise translate_redis_error(e, f"XGROUP DESTROY on {s.value}") from e
        except redis.RedisError as e:
            raise translate_redis_error(e, f"XGROUP DESTROY on {s.value}") from e
        return bool(destroyed)

    def _group_position(
        self, pipe: Pipeline, key: str, group: str, start_id: str
    ) -> list[str | int] | None:
        """XGROUP CREATE's id (and ENTRIESREAD) for `start_id`; None when `group` exists."""
        try:
            info: dict[str, Any] | None = cast(Any, pipe).xinfo_stream(key)
            groups: Any = cast(Any, pipe).xinfo_groups(key)
        except redis.ResponseError as e:
            if "no such key" not in str(e):
                raise
            info, groups = None, []
        if any(text(g["name"]) == group for g in groups):
            return None
        if start_id not in ("0", "$"):
            return [start_id]
        if self.counts_entries():  # Redis 7
            added = int(info["entries-added"]) if info else 0
            held = int(info["length"]) if info and start_id == "0" else 0
            return [start_id, "ENTRIESREAD", added - held]
        # Redis 6.2: an explicit id, which the bookkeeping records as the group's position
        if info is None:
            return ["0-0"]
        first = info.get("first-entry")
        if start_id == "0" and first:
            ms, seq = parse_id(first[0])
            before = (ms, seq - 1) if seq else (ms - 1, 2**64 - 1) if ms else (0, 0)
            return [f"{before[0]}-{before[1]}"]
        return [text(info["last-generated-id"])]

    def _group_base(self, pipe: Pipeline, stream: Stream, key: str) -> tuple[int, int]:
        """Redis 6.2: the bus's count of entries added to `stream` and the entries it holds.

        Read under the WATCH of the stream key: every XADD of the bus commits with its count (one
        MULTI or script), so the two agree.
        """
        added = pipe.hget(self.keys.trim_loss_reported(stream), ADDED_FIELD)
        return int(cast(Any, added) or 0), int(cast(Any, pipe.xlen(key)))

    def counts_entries(self) -> bool:
        """True when the server keeps stream entry counters (Redis >= 7)."""
        if self._server_major is None:
            version = str(self.redis.info("server")["redis_version"])
            self._server_major = int(version.split(".", maxsplit=1)[0])
        return self._server_major >= 7

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

    @property
    def effect_marker_ttl_s(self) -> int:
        """How long an `apply_once` marker outlives the ack of its entry.

        After the ack the entry is never redelivered; the marker then only guards against a
        duplicate entry of the same message (a producer's XADD retried after a lost reply), which
        sits next to the original and is handled within the redelivery window of the two:
        `max_deliveries` reclaims of `claim_idle_ms` each (at least a minute).
        """
        window_s = self.settings.claim_idle_ms * (self.settings.max_deliveries + 1) / 1000
        return max(60, int(window_s))

    def apply_once(
        self, delivery: Delivery, effect: Callable[[Pipeline], object], *, ack: bool = False
    ) -> bool:
        """Run `effect` (commands queued on a MULTI pipeline) at most once per message and group.

        The effect and a marker keyed by the message id commit in one MULTI, so a redelivery
        (a crash before the ack, a reclaim, a producer's retried XADD) finds the marker and skips
        the effect. With `ack=True` the XACK joins the same MULTI. Returns True when the effect
        ran now, False when it had already run.

        Markers are bounded: one lives for as long as its entry is unacked, then for
        `effect_marker_ttl_s` (the consumer shortens it in the MULTI of the ack). A stage that
        only publishes returns its outputs instead and needs no marker; an effect in another
        store keeps the message id in a unique column there.
        """
        marker = self.keys.effect_done(delivery.group, delivery.message.message_id)
        key = self._stream_keys[delivery.stream]
        ttl_s = self.effect_marker_ttl_s if ack else EFFECT_PENDING_TTL_S
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
                        break
                    except redis.WatchError:
                        continue
        except redis.RedisError as e:
            raise translate_redis_error(e, "an idempotent effect") from e
        if not ack:
            delivery.effect_markers.append(marker)
        return True

    # ---- dead letters and trimming --------------------------------------------------------------

    def replay_dead_letter(self, stream: Stream | str, dead_letter_id: str) -> str:
        """Re-publish a dead-letter entry to its stream (validated first); returns the new id."""
        return self.dead_letters.replay(stream, dead_letter_id)

    def check_trimmed(self, stream: Stream | str) -> list[TrimLoss]:
        """Find and report every group's entries trimmed before it delivered or acked them."""
        return self.trim_loss.check(stream)

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
            removed = cast(Any, self.redis).execute_command(
                "XTRIM", key, "MINID", "~", safe, "LIMIT", excess
            )
        except redis.RedisError as e:
            raise translate_redis_error(e, f"XTRIM on {s.value}") from e
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

    # ---- inspection -----------------------------------------------------------------------------

    @property
    def inspect(self) -> BusInspector:
        """Streams, groups, consumers, lag, pending, dead letters as DataFrames (notebooks, CLI)."""
        return BusInspector(self)
