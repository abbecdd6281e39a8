"""Trim-loss reporting: entries a group lost to trimming before it read or acked them.

Detected three ways: a group whose last-delivered id is below the stream's first entry
(*undelivered*), pending entries whose ids are gone (*unacked*), and `check` doing both for every
group of a stream. Each loss is reported once: a metric, an ERROR log line, a `stream_trimmed` risk
event on `risk_events`, and `losses` for notebooks.

The bookkeeping lives in one hash per stream (`Keys.trim_loss_reported`): per group what it was
told of, and on servers without stream counters (Redis 6.2) the bus's own count of entries added
(`ADDED_FIELD`, incremented atomically with every XADD of the bus) and each group's position and
count at creation (`base_field`), so a group that never read has its losses counted there too.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import redis

from tradeos_lab import contracts
from tradeos_lab.keys import Stream
from tradeos_lab.tiers.bus.events import stream_risk_event
from tradeos_lab.tiers.bus.metrics import TRIMMED_LOST
from tradeos_lab.tiers.bus.wire import ZERO_ID, parse_id, text, translate_redis_error

if TYPE_CHECKING:
    from redis.client import Pipeline
    from redis.commands.core import Script

    from tradeos_lab.tiers.bus.bus import Bus

log = logging.getLogger(__name__)

LossKind = Literal["undelivered", "unacked"]

# Compare-and-set of what was reported for one group, so that concurrent detectors (every
# consumer, every maintenance run) report each loss once. `total` mode keeps the running total of
# entries lost (Redis 7 counts them) and returns what is new; `gap` mode (Redis 6.2, no counts)
# keeps the last-delivered id of the last gap reported and returns 1 for a new gap.
_REPORTED_LUA = """
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == 'total' then
    local before = tonumber(prev or '0')
    local now = tonumber(ARGV[3])
    if now > before then
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
        return now - before
    end
    return 0
end
if prev == ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


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


#: Field of the bookkeeping hash counting the entries the bus added to the stream, kept on servers
#: without XINFO's `entries-added` (Redis 6.2). Group names cannot contain "+".
ADDED_FIELD = "+added"


def base_field(group: str) -> str:
    """Field of the bookkeeping hash holding `group`'s position and added count at creation.

    Its value is "<last-delivered id at creation> <entries added before it that it does not
    read>": while the group's last-delivered id is still that position it has never read, and
    every entry added since, minus those still held after it, was trimmed unread.
    """
    return f"{group}:base"


def _next_id(entry_id: tuple[int, int]) -> tuple[int, int]:
    """The smallest stream id above `entry_id`."""
    ms, seq = entry_id
    return (ms, seq + 1) if seq < 2**64 - 1 else (ms + 1, 0)


class TrimLossReporter:
    """Finds and reports trim losses of one bus's streams."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        #: The latest trim losses this process detected, newest last (for notebooks).
        self.losses: deque[TrimLoss] = deque(maxlen=1000)
        self._reported: Script = bus.redis.register_script(_REPORTED_LUA)

    @staticmethod
    def forget_fields(group: str) -> tuple[str, str, str]:
        """The fields of `trim_loss_reported(stream)` that hold what `group` was told of."""
        return group, f"{group}:gap", base_field(group)

    def check(self, stream: Stream | str) -> list[TrimLoss]:
        """Find and report every group's entries trimmed before it delivered or acked them.

        Pending entries whose ids are gone are acked (they can never be handled) and counted.
        A gap is reported once, however often this runs.
        """
        s = Stream(stream)
        key = self.bus.stream_key(s)
        try:
            pipe = self.bus.redis.pipeline(transaction=True)
            pipe.xinfo_stream(key)
            pipe.xinfo_groups(key)
            pipe.hgetall(self.bus.keys.trim_loss_reported(s))
            info, groups, bookkeeping = pipe.execute()
        except redis.ResponseError as e:
            if "no such key" in str(e):
                return []
            raise translate_redis_error(e, f"XINFO on {s.value}") from e
        except redis.RedisError as e:
            raise translate_redis_error(e, f"XINFO on {s.value}") from e
        losses: list[TrimLoss] = []
        for g in groups:
            group = text(g["name"])
            counted = (
                bookkeeping.get(ADDED_FIELD.encode()),
                bookkeeping.get(base_field(group).encode()),
            )
            loss = self.undelivered(s, group, info, g, counted)
            if loss is not None:
                losses.append(loss)
            reaped = self.reap_gone_pending(s, group, info)
            if reaped is not None:
                losses.append(reaped)
        return losses

    def queue_counted(self, pipe: Pipeline, stream: Stream, group: str) -> None:
        """Queue the read of the bus's own counts `undelivered` takes as `counted` (Redis 6.2)."""
        pipe.hmget(self.bus.keys.trim_loss_reported(stream), [ADDED_FIELD, base_field(group)])

    def undelivered(
        self,
        stream: Stream,
        group: str,
        info: dict[str, Any],
        g: dict[str, Any],
        counted: Sequence[bytes | None] = (None, None),
    ) -> TrimLoss | None:
        """Report entries trimmed after `g`'s last-delivered id but before it read them.

        `info` and `g` are XINFO STREAM and the group's XINFO GROUPS row, and `counted` the
        bookkeeping's `ADDED_FIELD` and `base_field(group)` (`queue_counted`), read together.
        """
        last = g["last-delivered-id"]
        first_entry = info.get("first-entry")
        first = first_entry[0] if first_entry else None
        if first is not None:
            # an entry could only have been between them if `first` is not the very next id
            behind = _next_id(parse_id(last)) < parse_id(first)
        else:
            behind = parse_id(last) < parse_id(info["last-generated-id"])
        if not behind:
            return None
        count: int | None
        reported = self.bus.keys.trim_loss_reported(stream)
        read = g.get("entries-read")
        total: int | None
        if "entries-added" in info and read is not None:
            # Redis 7 counts: every entry added but neither read by the group nor still in the
            # stream was trimmed unread. The group's read counter starts at what was trimmed
            # before it existed (`Bus.ensure_group`), so this is the group's running total.
            total = int(info["entries-added"]) - int(read) - int(info["length"])
        else:
            total = self._never_read_total(text(last), counted, int(info["length"]))
        if total is not None:
            # only what grew since the last report is new
            if total <= 0:
                return None
            count = int(self._reported(keys=[reported], args=[group, "total", total]))
            if count <= 0:
                return None
        else:
            # Redis 6.2 (or a group made elsewhere, with no read counter): a group behind the
            # first entry lost entries, how many is unknown; each gap is known by its position.
            if last == ZERO_ID:
                return None  # never positioned: whatever was trimmed may predate the group
            if not int(self._reported(keys=[reported], args=[f"{group}:gap", "gap", text(last)])):
                return None
            count = None
        loss = TrimLoss(
            stream=stream,
            group=group,
            kind="undelivered",
            count=count,
            entry_ids=(),
            last_delivered_id=text(last),
            first_entry_id=text(first) if first is not None else None,
            detected_at=time.time(),
        )
        self._report(loss)
        return loss

    @staticmethod
    def _never_read_total(last: str, counted: Sequence[bytes | None], length: int) -> int | None:
        """Redis 6.2: entries trimmed unread by a group still at its creation position.

        Counted from the bus's own tally of entries added (`ADDED_FIELD`): every entry added
        since the group's base is one it should read; those not held any more were trimmed (the
        group is behind the first entry, so every held entry comes after its position). None
        when the group has read since (its position moved) or was made elsewhere (no base).
        """
        added, base = counted
        if added is None or base is None:
            return None
        position, _, before = text(base).partition(" ")
        if position != last:
            return None
        return int(added) - int(before) - length

    def reap_gone_pending(
        self,
        stream: Stream,
        group: str,
        info: dict[str, Any] | None = None,
        *,
        already_gone: Sequence[bytes] = (),
    ) -> TrimLoss | None:
        """Ack `group`'s pending entries that trimming removed, and report them as one loss.

        `already_gone` are ids the server dropped from the pending list itself (Redis 7's
        XAUTOCLAIM); they join the same report.
        """
        key = self.bus.stream_key(stream)
        r = self.bus.redis
        try:
            if info is None:
                info = r.xinfo_stream(key)
            first_entry = info.get("first-entry")
            upper = "(" + text(first_entry[0]) if first_entry else "+"
            ids: list[bytes] = list(already_gone)
            count = len(ids)
            while True:
                rows: Any = r.xpending_range(key, group, "-", upper, 1000)
                batch = [row["message_id"] for row in rows]
                if batch:
                    count += int(r.xack(key, group, *batch))
                    ids.extend(batch)
                if len(rows) < 1000:
                    break
        except redis.RedisError as e:
            raise translate_redis_error(
                e, f"reaping trimmed pending entries of {stream.value}"
            ) from e
        if not count:
            return None
        return self.report_unacked(stream, group, ids, count, first_entry)

    def report_unacked(
        self,
        stream: Stream,
        group: str,
        ids: Sequence[bytes],
        count: int,
        first_entry: Any = None,
    ) -> TrimLoss:
        """Report `count` pending entries of `group` found trimmed (and already acked)."""
        loss = TrimLoss(
            stream=stream,
            group=group,
            kind="unacked",
            count=count,
            entry_ids=tuple(text(i) for i in ids[:100]),
            last_delivered_id="",
            first_entry_id=text(first_entry[0]) if first_entry else None,
            detected_at=time.time(),
        )
        self._report(loss)
        return loss

    def _report(self, loss: TrimLoss) -> None:
        """Metric, log line, risk event; reporting never breaks the consumer that detected it."""
        self.losses.append(loss)
        TRIMMED_LOST.labels(stream=loss.stream.value, group=loss.group).inc(loss.count or 1)
        how_many = "an unknown number of" if loss.count is None else str(loss.count)
        what = "read" if loss.kind == "undelivered" else "acked"
        log.error(
            "%s %s entries of %s were trimmed before group %s %s them",
            how_many,
            loss.kind,
            loss.stream.value,
            loss.group,
            what,
        )
        try:
            event = stream_risk_event(
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
                producer=self.bus.producer,
            )
            self.bus.publish(Stream.RISK_EVENTS, event)
        except Exception:  # the metric and the log line above already carry the loss
            log.exception("could not publish the stream_trimmed risk event")
