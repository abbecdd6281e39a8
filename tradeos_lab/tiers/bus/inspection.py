"""Looking into the bus from a notebook or the CLI: streams, groups, lag, pending, dead letters.

Every table is a pandas DataFrame (one row per stream, group, consumer, pending or dead-letter
entry); `group_info` returns a dataclass. Reading never changes the bus; `replay` and
`check_trimmed` are the two actions, and they say so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import redis

from tradeos_lab.errors import ContractError
from tradeos_lab.keys import Stream
from tradeos_lab.tiers.bus.trim_loss import TrimLoss
from tradeos_lab.tiers.bus.wire import parse_id, translate_redis_error

if TYPE_CHECKING:
    from redis.commands.core import Script

    from tradeos_lab.tiers.bus.bus import Bus

# Entries after the group's last-delivered id, counted on the server (no entry crosses the wire).
_LAG_LUA = """
local n = 0
local cursor = ARGV[1]
while true do
    local rows = redis.call('XRANGE', KEYS[1], cursor, '+', 'COUNT', 1000)
    n = n + #rows
    if #rows < 1000 then return n end
    cursor = '(' .. rows[#rows][1]
end
"""

_GROUP_COLUMNS = [
    "stream",
    "group",
    "consumers",
    "pending",
    "lag",
    "last_delivered_id",
    "entries_read",
    "server_lag",
]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_time(entry_id: str) -> pd.Timestamp:
    return pd.Timestamp(parse_id(entry_id)[0], unit="ms", tz="UTC")


@dataclass(frozen=True)
class GroupInfo:
    """One consumer group: how far it read, what it holds unacked, how far behind it is.

    `lag` counts entries still in the stream after `last_delivered_id`; `server_lag` is Redis 7's
    own figure (None on 6.2), which also counts entries trimmed before the group read them.
    """

    stream: str
    group: str
    consumers: int
    pending: int
    lag: int
    last_delivered_id: str
    entries_read: int | None
    server_lag: int | None


class BusInspector:
    """Read-only views of one bus (plus `replay` and `check_trimmed`)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.redis = bus.redis
        self.keys = bus.keys
        self._lag: Script = self.redis.register_script(_LAG_LUA)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as e:
            raise translate_redis_error(e, what) from e

    # ---- streams and groups ---------------------------------------------------------------------

    def streams(self) -> pd.DataFrame:
        """One row per pipeline stream that exists: length, first/last id and time, groups."""
        rows = []
        pipe = self.redis.pipeline(transaction=False)
        for s in Stream:
            pipe.exists(self.keys.stream(s))
            pipe.xlen(self.keys.dead_letter(s))
        exists = self._call("EXISTS", pipe.execute)
        for i, s in enumerate(Stream):
            if not exists[2 * i]:
                continue
            info = self._call("XINFO STREAM", self.redis.xinfo_stream, self.keys.stream(s))
            first = info.get("first-entry")
            last = info.get("last-entry")
            rows.append(
                {
                    "stream": s.value,
                    "length": int(info["length"]),
                    "groups": int(info["groups"]),
                    "first_id": _s(first[0]) if first else None,
                    "last_id": _s(last[0]) if last else None,
                    "first_at": _id_time(_s(first[0])) if first else None,
                    "last_at": _id_time(_s(last[0])) if last else None,
                    "entries_added": info.get("entries-added"),
                    "dead_letters": int(exists[2 * i + 1]),
                }
            )
        columns = [
            "stream",
            "length",
            "groups",
            "first_id",
            "last_id",
            "first_at",
            "last_at",
            "entries_added",
            "dead_letters",
        ]
        return pd.DataFrame(rows, columns=columns)

    def group_info(self, stream: Stream | str, group: str) -> GroupInfo:
        """The state of one group; `StoreError` names the groups there are when it is unknown."""
        infos = self._group_infos(Stream(stream))
        for info in infos:
            if info.group == group:
                return info
        from tradeos_lab.errors import StoreError

        known = ", ".join(i.group for i in infos) or "none"
        raise StoreError(f"no group {group!r} on {Stream(stream).value} (groups: {known})")

    def groups(self, stream: Stream | str | None = None) -> pd.DataFrame:
        """One row per consumer group (of `stream`, or of every stream)."""
        streams = [Stream(stream)] if stream is not None else list(Stream)
        rows = [asdict(i) for s in streams for i in self._group_infos(s)]
        return pd.DataFrame(rows, columns=_GROUP_COLUMNS)

    def _group_infos(self, stream: Stream) -> list[GroupInfo]:
        key = self.keys.stream(stream)
        try:
            groups = self.redis.xinfo_groups(key)
        except redis.ResponseError as e:
            if "no such key" in str(e):
                return []
            raise translate_redis_error(e, f"XINFO GROUPS on {stream.value}") from e
        except redis.RedisError as e:
            raise translate_redis_error(e, f"XINFO GROUPS on {stream.value}") from e
        out = []
        for g in groups:
            last = _s(g["last-delivered-id"])
            lag = int(self._call("lag", self._lag, keys=[key], args=["(" + last]))
            read = g.get("entries-read")
            server_lag = g.get("lag")
            out.append(
                GroupInfo(
                    stream=stream.value,
                    group=_s(g["name"]),
                    consumers=int(g["consumers"]),
                    pending=int(g["pending"]),
                    lag=lag,
                    last_delivered_id=last,
                    entries_read=int(read) if read is not None else None,
                    server_lag=int(server_lag) if server_lag is not None else None,
                )
            )
        return out

    def consumers(self, stream: Stream | str, group: str) -> pd.DataFrame:
        """One row per consumer of a group: pending entries and idle time."""
        s = Stream(stream)
        rows = self._call("XINFO CONSUMERS", self.redis.xinfo_consumers, self.keys.stream(s), group)
        data = [
            {
                "consumer": _s(r["name"]),
                "pending": int(r["pending"]),
                "idle_ms": int(r["idle"]),
            }
            for r in rows
        ]
        return pd.DataFrame(data, columns=["consumer", "pending", "idle_ms"])

    def pending(
        self,
        stream: Stream | str,
        group: str,
        *,
        count: int = 100,
        consumer: str | None = None,
    ) -> pd.DataFrame:
        """The oldest `count` unacked entries of a group: owner, idle time, delivery count."""
        s = Stream(stream)
        rows = self._call(
            "XPENDING",
            self.redis.xpending_range,
            self.keys.stream(s),
            group,
            "-",
            "+",
            count,
            consumername=consumer,
        )
        data = [
            {
                "entry_id": _s(r["message_id"]),
                "consumer": _s(r["consumer"]),
                "idle_ms": int(r["time_since_delivered"]),
                "deliveries": int(r["times_delivered"]),
            }
            for r in rows
        ]
        return pd.DataFrame(data, columns=["entry_id", "consumer", "idle_ms", "deliveries"])

    # ---- dead letters ---------------------------------------------------------------------------

    def dead_letters(self, stream: Stream | str, *, count: int = 100) -> pd.DataFrame:
        """The newest `count` dead-letter entries of a stream, newest first, with the reason."""
        s = Stream(stream)
        rows = self._call(
            "XREVRANGE", self.redis.xrevrange, self.keys.dead_letter(s), "+", "-", count
        )
        data = []
        for dlq_id, f in rows:
            fields = {_s(k): v for k, v in f.items()}
            data.append(
                {
                    "dead_letter_id": _s(dlq_id),
                    "entry_id": _s(fields.get("entry_id", b"")),
                    "group": _s(fields.get("group", b"")),
                    "consumer": _s(fields.get("consumer", b"")),
                    "reason": _s(fields.get("reason", b"")),
                    "error": _s(fields.get("error", b"")),
                    "deliveries": int(fields.get("deliveries", 0)),
                    "dead_lettered_at": pd.Timestamp(
                        int(fields.get("dead_lettered_at_ms", 0)), unit="ms", tz="UTC"
                    ),
                    "size": sum(len(v) for k, v in fields.items() if k == "m" or "." in k),
                }
            )
        columns = [
            "dead_letter_id",
            "entry_id",
            "group",
            "consumer",
            "reason",
            "error",
            "deliveries",
            "dead_lettered_at",
            "size",
        ]
        return pd.DataFrame(data, columns=columns)

    def replay(self, stream: Stream | str, dead_letter_id: str) -> str:
        """Re-publish a dead-letter entry to its stream (validated first); returns the new id."""
        return self.bus.replay_dead_letter(stream, dead_letter_id)

    # ---- entries --------------------------------------------------------------------------------

    def read(
        self,
        stream: Stream | str,
        start: str = "-",
        end: str = "+",
        *,
        count: int | None = 1000,
    ) -> pd.DataFrame:
        """Entries `start`..`end` as rows: entry id and time, the envelope, `payload.*` columns.

        An entry that is not a valid message becomes a row with only `error` set.
        """
        s = Stream(stream)
        rows = self._call("XRANGE", self.redis.xrange, self.keys.stream(s), start, end, count)
        records: list[dict[str, Any]] = []
        for entry_id, fields in rows:
            eid = _s(entry_id)
            record: dict[str, Any] = {"entry_id": eid, "entry_time": _id_time(eid)}
            try:
                message = self.bus.decode(s, fields)
            except ContractError as e:
                record["error"] = str(e)
            else:
                record.update(message.model_dump(mode="json", by_alias=True))
            records.append(record)
        if not records:
            return pd.DataFrame(columns=["entry_id", "entry_time"])
        frame = pd.json_normalize(records, max_level=1)
        return frame.set_index("entry_id")

    # ---- actions --------------------------------------------------------------------------------

    def check_trimmed(self, stream: Stream | str) -> list[TrimLoss]:
        """Find and report entries trimmed before a group read or acked them (see `Bus`)."""
        return self.bus.check_trimmed(stream)
