"""The bus's wire layer: entry ids, raw stream entries, Redis errors translated to ours.

Every bus entry is one field, `m`, holding an encoded contract message. `Wire` sends pre-packed
commands on the hot paths (publish, ack); everything else goes through plain redis-py calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tradeos_lab import contracts
from tradeos_lab.errors import DependencyUnavailable, StoreError

if TYPE_CHECKING:
    from redis.client import Pipeline

FIELD = contracts.FIELD
FIELD_B = FIELD.encode()
ZERO_ID = b"0-0"


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    """A stream id as a comparable (milliseconds, sequence) pair."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def text(value: bytes | str) -> str:
    """A reply value (bytes from the server) as text."""
    return value.decode() if isinstance(value, bytes) else value


@dataclass(slots=True)
class Entry:
    """One stream entry as read for a group, with the group's delivery count for it."""

    entry_id: bytes
    fields: dict[bytes, bytes]
    deliveries: int

    @property
    def gone(self) -> bool:
        # XADD needs at least one field: an empty entry is one trimmed away while pending
        return not self.fields


def translate_redis_error(e: redis.RedisError, what: str) -> Exception:
    """Ours for a redis-py error: unreachable is `DependencyUnavailable`, the rest `StoreError`."""
    if isinstance(e, redis.ConnectionError | redis.TimeoutError):
        return DependencyUnavailable(f"bus Redis unreachable during {what}: {type(e).__name__}")
    return StoreError(f"bus Redis refused {what}: {e}")


def queue_command(pipe: Pipeline, *args: Any) -> Any:
    """Queue a raw command on a pipeline (redis-py leaves `execute_command` untyped there)."""
    return cast(Any, pipe).execute_command(*args)


#: hiredis packs a command in C; its stub types the argument as a 1-tuple.
pack_command = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)


class Wire:
    """Raw round trips for the hot paths (publish, ack) on the client's own connections.

    On a unix socket redis-py's per-call machinery (pool checkout with a socket poll, hooks,
    reply callbacks) costs more than the round trip; commands are packed here with hiredis and
    replies read straight off the connection. Connection errors are retried with the client's
    backoff, as redis-py does; an error reply raises `ResponseError` after all replies are read,
    so the connection stays in step. Connections come from the client's pool and are kept, so
    closing the client closes them.

    Kept because the targets need it. `benchmarks/bench_bus.py --server system` (Redis 7.0.15,
    unix socket, AOF everysec, 2 shared CPUs at load 10), the same validated 433-byte bars:
    pipelined publish 53,352 msg/s here vs 24,446 on plain redis-py pipelines, against
    redis-benchmark -P 16's 177,778: 30% (target >= 25%) vs 14%; one publish per round trip
    35,793 vs 19,243 msg/s against redis-benchmark -c 1 -P 1's 38,911: 92% (target >= 50%) vs
    49%. It uses `Connection.send_packed_command` and `read_response`, hence the `redis<9` pin.
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
