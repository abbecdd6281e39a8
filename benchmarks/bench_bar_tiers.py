"""The last 500 bars from the cache (Redis), the lake (chdb) and PostgreSQL, side by side.

    .venv/bin/python benchmarks/bench_bar_tiers.py [--symbols 20] [--days 30] [--reps 2000]

Target: the cache answers "last 500 bars" >= 10x faster than either store, at p50 and at p99
(the cache is the live-trading tier: it must stay well under 10 ms, PostgreSQL under 50 ms).

The cache is timed twice. "cache" is the cache as shipped: bar reads go through its near cache
(`tradeos_lab.tiers.near_cache`), so a block read again while unchanged costs no round trip, only
the frame building. "cache, round trip" is a `Cache` on the same client without a near cache (as
with cache_near_entries=0): one GETRANGE per read. Why both: on a shared VM a round trip alone is
~0.2 ms at p50 and 1-15 ms in the tail (scheduling), which held the round-trip cache at 4-7x
PostgreSQL's p99 in five of six runs at load average 3-9 (figures in `near_cache`). The verdict
uses the cache as shipped; the round-trip figures show what the near cache buys. Nothing writes
while the clock runs, so every timed "cache" read after the warm-up is a near-cache hit (the
first after a silence of over 1 s also sends a liveness PING, without waiting for it); with a
live feed, each appended bar invalidates its block and the next read of it is a round trip.

Setup, all in this run: its own redis-server with the cache role (or `--redis-url`), an embedded
chdb lake in a temporary directory, and a scratch database on the PostgreSQL of
TRADEOS_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres), dropped at the end.
Each store holds `--days` of one-minute synthetic bars for `--symbols` tickers (the lake also its
rollups), the cache the last 500 of each. Every read is the public API a notebook calls and
returns the same bar frame:

- cache: `Cache.get_bars(symbol, "1m", limit=500)` through the near cache;
- cache, round trip: the same call on a `Cache` without one;
- reader: `BarReader.get_bars(symbol, "1m", limit=500)` answered by the cache (the three-tier
  path's overhead on a hit);
- lake: `Lake.read_bars(symbol, "1m", limit=500)`;
- postgres: `PostgresBarStore.read_bars(symbol, "1m", limit=500)`.

Symbols rotate on every read. The tiers are timed in interleaved blocks (50 reads of each in
turn, the garbage collector paused inside a block as timeit does) so a busy neighbour on a shared
machine slows all of them alike; p50 and p99 come from every read of the run.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import secrets
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
from sqlalchemy import create_engine

from tradeos_lab.keys import Keys
from tradeos_lab.marketdata import BarReader
from tradeos_lab.providers import SyntheticProvider
from tradeos_lab.settings import load_settings
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.stack.redis_server import RedisServerProcess, RedisServerSpec, redis_server_binary
from tradeos_lab.stores.bars_pg import PostgresBarStore
from tradeos_lab.stores.lake import TIERS, Lake, bars_table
from tradeos_lab.tiers.cache import Cache

ADMIN_URL = os.environ.get("TRADEOS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TARGET = 10.0
WINDOW = 500
BLOCK = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(samples: list[float]) -> tuple[float, float, float]:
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    return float(p50), float(p90), float(p99)


def interleaved(
    readers: dict[str, Callable[[str], pd.DataFrame]], symbols: list[str], reps: int
) -> dict[str, list[float]]:
    """`reps` timed reads per tier, in blocks of BLOCK per tier in turn, symbols rotating."""
    samples: dict[str, list[float]] = {name: [] for name in readers}
    clock = time.perf_counter_ns
    for read in readers.values():  # warm-up: connections, plans, caches
        for symbol in symbols * 5:
            read(symbol)
    i = 0
    while len(samples[next(iter(readers))]) < reps:
        for name, read in readers.items():
            out = samples[name]
            gc.collect()
            gc.disable()  # as timeit does: a collection lands on whichever read is unlucky
            for k in range(BLOCK):
                symbol = symbols[(i + k) % len(symbols)]
                start = clock()
                read(symbol)
                out.append((clock() - start) / 1e6)
            gc.enable()
        i += BLOCK
    return {name: s[:reps] for name, s in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--days", type=int, default=30, help="one-minute history per symbol")
    parser.add_argument("--reps", type=int, default=2000, help="timed reads per tier")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-tiers-"))
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        data_dir=workdir / "lab", namespace=namespace, bar_ttl_1m_seconds=86_400
    )
    server: RedisServerProcess | None = None
    if args.redis_url:
        redis_url, where = args.redis_url, "given"
    else:
        spec = RedisServerSpec(
            role="cache",
            directory=workdir / "cache",
            password=secrets.token_hex(16),
            policy="allkeys-lru",
            maxmemory="256mb",
            port=free_port(),
        )
        server = RedisServerProcess(
            spec, binary=shutil.which("redis-server") or redis_server_binary()
        )
        server.start()
        redis_url, where = server.url, f"own redis-server on 127.0.0.1:{spec.port}"

    database = f"bench_tiers_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    pg_url = psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=database)
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(pg_url))
    client = make_redis(redis_url, role="cache")
    tracked = make_redis(redis_url, role="cache", tracking=True)
    lake = Lake.open(settings)
    try:
        cache = Cache(client, keys=Keys(namespace), settings=settings, near_client=tracked)
        round_trip = Cache(client, keys=Keys(namespace), settings=settings)
        assert cache.near is not None
        assert round_trip.near is None
        pg = PostgresBarStore(engine)
        symbols = [f"SYM{i:03d}" for i in range(args.symbols)]
        end = pd.Timestamp.now(tz="UTC").floor("min")
        start = end - pd.Timedelta(days=args.days)
        provider = SyntheticProvider(seed=42)

        began = time.perf_counter()
        total = 0
        for symbol in symbols:
            bars = provider.fetch_bars(symbol, "1m", start, end)
            lake.write_bars(bars)
            pg.write_bars(bars)
            cache.write_bars(bars.tail(WINDOW))
            total += len(bars)
        # Steady state before timing: the lake's background merges and PostgreSQL's autovacuum
        # would otherwise compete for the CPUs (and the reads) while the clock runs.
        lake.refresh_rollups()  # the coarse tiers too, as `up` would have settled them
        for tf in TIERS:
            lake.command(f"OPTIMIZE TABLE {bars_table(tf)} FINAL")
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        print(
            f"loaded {total:,} one-minute bars ({args.symbols} symbols x {args.days} days) into "
            f"the lake, PostgreSQL ({pg.mode}) and the cache in {time.perf_counter() - began:.1f} s"
        )

        now = end + pd.Timedelta(seconds=30)
        reader = BarReader(cache, lake, None, clock=lambda: now)
        readers: dict[str, Callable[[str], pd.DataFrame]] = {
            "cache": lambda s: cache.get_bars(s, "1m", limit=WINDOW),
            "cache, round trip": lambda s: round_trip.get_bars(s, "1m", limit=WINDOW),
            "reader (cache hit)": lambda s: reader.get_bars(s, "1m", limit=WINDOW),
            "lake (chdb)": lambda s: lake.read_bars(s, "1m", limit=WINDOW),
            "postgres": lambda s: pg.read_bars(s, "1m", limit=WINDOW),
        }
        columns = ["ts", "open", "high", "low", "close", "volume"]
        reference = readers["cache"](symbols[0]).loc[:, columns]
        assert len(reference) == WINDOW
        for name, read in readers.items():  # every tier answers the same bars
            got = read(symbols[0]).loc[:, columns]
            pd.testing.assert_frame_equal(got, reference, check_exact=False, obj=name)
        assert reader.stats()["cache_hits"] >= 1
        assert reader.stats()["store_hits"] + reader.stats()["store_misses"] == 0

        near_before = cache.near.stats()
        samples = interleaved(readers, symbols, args.reps)
        near_after = cache.near.stats()
    finally:
        lake.close()
        client.close()
        tracked.close()
        engine.dispose()
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"\nlast {WINDOW} bars, {args.reps} reads per tier, symbols rotating; redis: {where}; "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs\n"
    )
    stats = {name: pct(s) for name, s in samples.items()}
    print(f"{'tier':<20} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
    for name, (p50, p90, p99) in stats.items():
        mean = np.mean(samples[name])
        print(f"{name:<20} {p50:>9.3f} {p90:>9.3f} {p99:>9.3f} {mean:>9.3f}")

    # The near cache answers "cache" and "reader (cache hit)", warm-up reads included.
    served = {k: near_after[k] - near_before[k] for k in near_after}
    print(
        f"\nnear cache over warm-up and timed reads: {served['hits']} hits, {served['fetches']} "
        f"fetches, {served['probes']} liveness PINGs, {served['invalidated']} invalidations, "
        f"{served['flushes']} flushes"
    )

    peers = ("lake (chdb)", "postgres")
    ok = True
    print(f"\n{'faster by':<20}" + "".join(f" {p + ' p50':>16} {p + ' p99':>16}" for p in peers))
    for name in ("cache", "cache, round trip"):
        p50, _, p99 = stats[name]
        cells = []
        for peer in peers:
            r50, r99 = stats[peer][0] / p50, stats[peer][2] / p99
            cells += [r50, r99]
            if name == "cache":
                ok &= r50 >= TARGET and r99 >= TARGET
        print(f"{name:<20}" + "".join(f" {r:>15.1f}x" for r in cells))
    verdict = "PASS" if ok else "FAIL"
    print(
        f"\ntarget: cache (as shipped, near cache on) >= {TARGET:.0f}x faster than the lake and "
        f"PostgreSQL at p50 and p99 -> {verdict}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
