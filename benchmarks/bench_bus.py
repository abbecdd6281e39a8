"""Bus throughput next to `redis-benchmark` XADD on the same redis-server, in the same run.

    python benchmarks/bench_bus.py [--messages 50000] [--server embedded|system] [--tcp]

Starts one redis-server (the bus role's settings: noeviction, AOF everysec; unix socket unless
`--tcp`), then measures on it:

- `redis-benchmark XADD key MAXLEN ~ CAP * m <a realistic encoded message>` with `-P 16` (50
  clients) and with `-c 1 -P 1`;
- `Bus.publish_many` (validate + encode + pipelined XADD; on Redis 6.2 one script per pipeline,
  the XADDs with the bus's count of entries added) and `Bus.publish` (one round trip each, on 6.2
  a MULTI with the count) of realistic 1m-bar messages;
- one consumer's consume + ack (XREADGROUP batches, decode to typed messages, pipelined XACK).

Prints each rate and the ratios the bus is held to: pipelined publish >= 25% of
redis-benchmark -P 16, unpipelined >= 50% of -c 1 -P 1, consume + ack >= 20k msg/s.

    python benchmarks/bench_bus.py --aof-crash 5 [--server system]

instead SIGKILLs the server under a flat-out pipelined producer, restarts it from its AOF and
counts acknowledged entries that did not survive (the figure in docs/bus.md).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tradeos_lab.contracts import decode, encode
from tradeos_lab.errors import DependencyUnavailable
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


def start_server(workdir: Path, *, system: bool, tcp: bool) -> RedisServerProcess:
    port = 0
    if tcp:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    spec = RedisServerSpec(
        role="bus",
        directory=workdir,
        password=secrets.token_hex(16),
        policy="noeviction",
        appendonly=True,
        appendfsync="everysec",
        port=port,
        socket_path=None if tcp else socket_path_for(workdir, "bus"),
    )
    binary = (shutil.which("redis-server") if system else None) or redis_server_binary()
    server = RedisServerProcess(spec, binary=binary)
    server.start()
    return server


def redis_benchmark(
    server: RedisServerProcess, key: str, cap: int, value: bytes, *, n: int, extra: list[str]
) -> float:
    """Requests per second of redis-benchmark running XADD with `value` as the one field."""
    where = (
        ["-s", str(server.spec.socket_path)]
        if server.spec.socket_path
        else ["-h", "127.0.0.1", "-p", str(server.spec.port)]
    )
    cmd = [
        "redis-benchmark",
        *where,
        "-a",
        server.spec.password,
        "-n",
        str(n),
        *extra,
        "-q",
        "XADD",
        key,
        "MAXLEN",
        "~",
        str(cap),
        "*",
        "m",
        value.decode(),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rates = re.findall(r"([0-9.]+) requests per second", out)
    if not rates:
        raise RuntimeError(f"unexpected redis-benchmark output: {out[-300:]!r}")
    return float(rates[-1])


def plain_publish_many(bus: Bus, client: Any, messages: list[Any]) -> None:
    """`Bus.publish_many` on plain redis-py pipelines instead of the wire layer (for comparison)."""
    key = bus.stream_key(MD)
    for start in range(0, len(messages), 1000):
        pipe = client.pipeline(transaction=False)
        for m in messages[start : start + 1000]:
            pipe.execute_command(
                "XADD", key, "MAXLEN", "~", bus.hard_cap, "*", "m", bus.encode(MD, m)
            )
        pipe.execute()


def plain_publish(bus: Bus, client: Any, messages: list[Any]) -> None:
    """`Bus.publish` as one plain redis-py call each (for comparison)."""
    key = bus.stream_key(MD)
    for m in messages:
        client.execute_command(
            "XADD", key, "MAXLEN", "~", bus.hard_cap, "*", "m", bus.encode(MD, m)
        )


def timed(fn: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def consume_all(bus: Bus, group: str, expected: int) -> float:
    """One consumer, a no-op handler: messages per second until the stream is drained."""
    consumer = bus.consumer(MD, group, "c1", count=500, block_ms=0)
    consumer.maintenance_s = -1
    handled = 0

    def handle(d: Delivery) -> None:
        nonlocal handled
        handled += 1

    start = time.perf_counter()
    while consumer.poll(handle, block_ms=0).fetched:
        pass
    rate = handled / (time.perf_counter() - start)
    if handled != expected or bus.inspect.group_info(MD, group).pending:
        raise RuntimeError(f"consumed {handled} of {expected}, or left some pending")
    return rate


def _produce_until_down(bus: Bus, batch: list[Any], acked: list[str]) -> None:
    while True:
        try:
            acked.extend(bus.publish_many(MD, batch))
        except DependencyUnavailable:
            return  # the server is gone and stays gone until it is restarted


def aof_crash(runs: int, *, system: bool, tcp: bool) -> int:
    """SIGKILL the bus redis-server under a flat-out pipelined producer; count lost entries.

    An entry is lost when its XADD was acknowledged but the restarted server (AOF everysec)
    does not have it.
    """
    settings = load_settings(namespace="bench", stream_maxlen=10_000_000)
    batch = [bar_message(i) for i in range(100)]
    for run in range(1, runs + 1):
        with tempfile.TemporaryDirectory(prefix="bench-bus-aof-") as tmp:
            server = start_server(Path(tmp), system=system, tcp=tcp)
            client = make_redis(server.url, role="bus", client_name="bench")
            version = client.info("server")["redis_version"]
            bus = Bus(client, keys=Keys("bench"), settings=settings)
            acked: list[str] = []
            started = time.perf_counter()
            producer = threading.Thread(target=_produce_until_down, args=(bus, batch, acked))
            producer.start()
            time.sleep(1.5)
            server.kill()
            killed = time.perf_counter()
            producer.join(60)
            rate = len(acked) / (killed - started)
            server.start()
            client = make_redis(server.url, role="bus", client_name="bench")
            stored = {
                i.decode()
                for i, _ in client.xrange(Keys("bench").stream(MD))  # type: ignore[union-attr]
            }
            lost = len(set(acked) - stored)
            print(
                f"run {run}: redis-server {version}, AOF everysec, SIGKILL after 1.5 s at "
                f"{rate:,.0f} msg/s: {len(acked):,} acknowledged, {lost:,} lost "
                f"(one second holds {rate:,.0f})"
            )
            client.close()
            server.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best counts")
    parser.add_argument("--server", choices=["embedded", "system"], default="embedded")
    parser.add_argument("--tcp", action="store_true", help="loopback TCP instead of a unix socket")
    parser.add_argument(
        "--aof-crash", type=int, default=0, metavar="RUNS", help="measure AOF loss instead"
    )
    args = parser.parse_args()
    if args.aof_crash:
        return aof_crash(args.aof_crash, system=args.server == "system", tcp=args.tcp)
    if shutil.which("redis-benchmark") is None:
        print("redis-benchmark is not installed (apt-get install redis-tools)")
        return 2
    n = args.messages
    best: dict[str, float] = {}

    def record(name: str, rate: float) -> None:
        best[name] = max(best.get(name, 0.0), rate)

    with tempfile.TemporaryDirectory(prefix="bench-bus-") as tmp:
        server = start_server(Path(tmp), system=args.server == "system", tcp=args.tcp)
        try:
            client = make_redis(server.url, role="bus", client_name="bench")
            version = client.info("server")["redis_version"]
            keys = Keys("bench")
            bus = Bus(client, keys=keys, settings=load_settings(namespace="bench"))
            messages = [bar_message(i) for i in range(2000)]
            to_publish = [messages[i % len(messages)] for i in range(n)]
            stream_key = keys.stream(MD)
            value = encode(messages[0])  # the exact bytes a publish sends
            bus.publish_many(MD, messages)  # warm up
            client.delete(stream_key)

            rb_n = n // 4
            singles = to_publish[:rb_n]
            raws = [encode(m) for m in messages]
            for _ in range(args.rounds):
                record(
                    "rb_p16",
                    redis_benchmark(server, "rb", bus.hard_cap, value, n=n * 4, extra=["-P", "16"]),
                )
                client.delete("rb")
                record(
                    "pipelined",
                    timed(
                        lambda: [
                            bus.publish_many(MD, to_publish[i : i + 1000])
                            for i in range(0, n, 1000)
                        ],
                        n,
                    ),
                )
                client.delete(stream_key)
                rb_n = n // 4
                record(
                    "rb_p1",
                    redis_benchmark(
                        server, "rb", bus.hard_cap, value, n=rb_n, extra=["-c", "1", "-P", "1"]
                    ),
                )
                client.delete("rb")
                record("single", timed(lambda: [bus.publish(MD, m) for m in singles], rb_n))
                client.delete(stream_key)
                record("plain_single", timed(lambda: plain_publish(bus, client, singles), rb_n))
                client.delete(stream_key)
                record(
                    "plain_pipelined",
                    timed(lambda: plain_publish_many(bus, client, to_publish), n),
                )
                client.delete(stream_key)

                fill = min(n, bus.hard_cap)
                bus.publish_many(MD, to_publish[:fill])
                record("consume", consume_all(bus, "bench", fill))
                client.delete(stream_key)
                record(
                    "decode",
                    timed(lambda: [decode(r, stream=MD) for r in raws], len(raws)),
                )
        finally:
            server.stop()

    where = f"tcp 127.0.0.1:{server.spec.port}" if args.tcp else "unix socket"
    load = os.getloadavg()[0]
    print(
        f"redis-server {version} ({args.server}, {where}, AOF everysec); {len(value)}-byte "
        f"message; best of {args.rounds} interleaved rounds; load average {load:.1f} on "
        f"{os.cpu_count()} CPUs"
    )
    print(f"redis-benchmark XADD -P 16 (50 clients) : {best['rb_p16']:>10,.0f} msg/s")
    print(f"redis-benchmark XADD -c 1 -P 1          : {best['rb_p1']:>10,.0f} msg/s")
    print(f"Bus.publish_many (pipelined)            : {best['pipelined']:>10,.0f} msg/s")
    print(f"Bus.publish (one round trip each)       : {best['single']:>10,.0f} msg/s")
    print(f"plain redis-py pipelines (publish_many) : {best['plain_pipelined']:>10,.0f} msg/s")
    print(f"plain redis-py calls (publish)          : {best['plain_single']:>10,.0f} msg/s")
    print(f"one consumer, consume + ack             : {best['consume']:>10,.0f} msg/s")
    print(
        f"  of which contracts.decode alone       : {best['decode']:>10,.0f} msg/s "
        f"({1e6 / best['decode']:.1f} us of {1e6 / best['consume']:.1f} us per message)"
    )
    checks = [
        ("pipelined publish / redis-benchmark -P 16", best["pipelined"] / best["rb_p16"], 0.25),
        ("unpipelined publish / redis-benchmark -c 1 -P 1", best["single"] / best["rb_p1"], 0.50),
        ("consume + ack / pipelined publish", best["consume"] / best["pipelined"], None),
        ("plain pipelines / redis-benchmark -P 16", best["plain_pipelined"] / best["rb_p16"], None),
        ("plain calls / redis-benchmark -c 1 -P 1", best["plain_single"] / best["rb_p1"], None),
    ]
    ok = True
    for label, ratio, target in checks:
        verdict = "" if target is None else ("  ok" if ratio >= target else "  MISSED")
        goal = "" if target is None else f" (target >= {target:.0%})"
        print(f"{label:<50}: {ratio:6.1%}{goal}{verdict}")
        ok &= target is None or ratio >= target
    met = best["consume"] >= 20_000
    verdict = "  ok" if met else "  MISSED"
    print(f"{'consume + ack rate':<50}: {best['consume']:,.0f} msg/s (target >= 20,000){verdict}")
    return 0 if ok and met else 1


if __name__ == "__main__":
    sys.exit(main())
