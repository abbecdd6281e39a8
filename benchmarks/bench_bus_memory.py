"""Bus Redis memory per million messages: idempotency markers before and after, next to the stream.

    python benchmarks/bench_bus_memory.py [--messages 100000] [--server embedded|system]

Starts a scratch redis-server (noeviction, no persistence) and measures `INFO memory`
`used_memory` before and after each step, scaled to a million messages:

- the peer: the raw stream holding the messages (`Bus.publish_many` of realistic 1m bars);
- before: one `apply_once` marker per message and group that lives 7 days (the old design), so at
  1,000 msg/s a week of markers is alive at once;
- after: `apply_once` markers outlive their entry's ack by `effect_marker_ttl_s` only (the
  consumer shortens them in the ack's MULTI), so the live set is rate x that TTL; measured by
  running a real consumer and reading the TTLs it left;
- a stage that returns its outputs (derived ids, committed with the ack) writes no marker at all:
  its only memory is the output stream.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import redis

from tradeos_lab.contracts import Direction, Message, RawSignal, derive
from tradeos_lab.keys import Keys, Stream
from tradeos_lab.settings import load_settings
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.stack.redis_server import (
    RedisServerProcess,
    RedisServerSpec,
    redis_server_binary,
    socket_path_for,
)
from tradeos_lab.tiers.bus import Bus, Delivery

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "tiers"))
from bus_support import bar_message

MD = Stream.MARKET_DATA
RATE = 1_000  # messages per second the figures are extrapolated to
WEEK_S = 7 * 24 * 3600
MB = 1024 * 1024


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])  # type: ignore[index]


def signal_for(d: Delivery) -> Message:
    payload = RawSignal(
        strategy="momo",
        symbol="AAPL",
        timeframe="1m",
        ts=d.message.payload.ts,  # type: ignore[union-attr]
        direction=Direction.LONG,
        strength=0.5,
        confidence=0.7,
        features={"rsi": 61.0},
        source_message_id=d.message.message_id,
    )
    return derive(d.message, payload, producer="signal-engine")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--server", choices=["embedded", "system"], default="embedded")
    args = parser.parse_args()
    n = args.messages
    per_million = 1_000_000 / n
    with tempfile.TemporaryDirectory(prefix="bench-bus-memory-") as tmp:
        directory = Path(tmp)
        spec = RedisServerSpec(
            role="bus",
            directory=directory,
            password=secrets.token_hex(16),
            policy="noeviction",
            socket_path=socket_path_for(directory, "bus"),
        )
        binary = (shutil.which("redis-server") if args.server == "system" else None) or (
            redis_server_binary()
        )
        server = RedisServerProcess(spec, binary=binary)
        server.start()
        try:
            client = make_redis(server.url, role="bus", client_name="bench-memory")
            version = client.info("server")["redis_version"]  # type: ignore[index]
            keys = Keys("bench")
            bus = Bus(
                client,
                keys=keys,
                settings=load_settings(namespace="bench", stream_maxlen=n),
                trim_policy="maxlen",
            )
            messages = [bar_message(i) for i in range(n)]

            # the peer: the stream itself
            start = used(client)
            ids = bus.publish_many(MD, messages)
            stream_bytes = used(client) - start

            # before: a 7-day marker per message, exactly what apply_once used to write
            start = used(client)
            pipe = client.pipeline(transaction=False)
            for message, entry_id in zip(messages, ids, strict=True):
                pipe.set(keys.effect_done("positions", message.message_id), entry_id, ex=WEEK_S)
                if len(pipe) >= 1000:
                    pipe.execute()
            pipe.execute()
            marker_bytes = used(client) - start
            client.flushdb()

            # after: a real consumer, apply_once without ack (the case that keeps markers)
            ids = bus.publish_many(MD, messages)
            consumer = bus.consumer(MD, "positions", "w1", count=500, block_ms=0)
            consumer.maintenance_s = -1
            position = "bench:position"

            def keep_position(d: Delivery) -> None:
                volume = d.message.payload.volume  # type: ignore[union-attr]
                bus.apply_once(d, lambda p: p.incrbyfloat(position, volume))

            while consumer.poll(keep_position).fetched:
                pass
            sample = [keys.effect_done("positions", m.message_id) for m in messages[:: n // 100]]
            ttls = [int(client.ttl(k)) for k in sample]  # type: ignore[arg-type]
            ttl_after = bus.effect_marker_ttl_s
            if not all(0 < t <= ttl_after for t in ttls):
                raise RuntimeError(f"markers left with TTLs {sorted(set(ttls))[:5]}")

            # a stage returning its outputs: no marker, only the output stream
            client.flushdb()
            bus.publish_many(MD, messages)
            start = used(client)
            stage = bus.consumer(MD, "signal-engine", "w1", count=500, block_ms=0)
            stage.maintenance_s = -1
            while stage.poll(signal_for).fetched:
                pass
            stage_bytes = used(client) - start
            stage_markers = sum(1 for _ in client.scan_iter(match="bench:bus:done:*"))
            output_entries = int(client.xlen(keys.stream(Stream.SIGNALS_RAW)))  # type: ignore[arg-type]
        finally:
            server.stop()

    marker_size = marker_bytes / n
    stream_mb = stream_bytes * per_million / MB
    before_mb = marker_bytes * per_million / MB
    live_before = RATE * WEEK_S
    live_after = RATE * ttl_after
    after_mb = min(1_000_000, live_after) * marker_size / MB
    print(
        f"redis-server {version} ({args.server}); {n:,} messages, scaled to a million; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"raw stream (peer)          : {stream_mb:8.1f} MB per million entries")
    print(
        f"before: 7-day markers      : {before_mb:8.1f} MB per million messages "
        f"({before_mb / stream_mb:.0%} of the stream; {marker_size:.0f} B each), none expiring "
        f"within a week: at {RATE:,} msg/s {live_before:,} live = "
        f"{live_before * marker_size / 1024**3:,.1f} GB"
    )
    print(
        f"after: {ttl_after} s past the ack   : {after_mb:8.1f} MB at any time at {RATE:,} msg/s "
        f"({live_after:,} live, {after_mb / stream_mb:.0%} of a million-entry stream); "
        f"every sampled marker's TTL <= {ttl_after} s"
    )
    print(
        f"a stage returning outputs  : {stage_markers} markers; "
        f"{stage_bytes * per_million / MB:8.1f} MB per million = its output stream "
        f"({output_entries:,} entries)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
