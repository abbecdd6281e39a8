"""Fault injection on the bus: a consumer SIGKILLed before its ack, the bus Redis restarted or
crashed mid-stream (AOF everysec). Each test starts and kills its own processes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tradeos_lab.contracts import FIELD, decode
from tradeos_lab.errors import DependencyUnavailable
from tradeos_lab.keys import Keys, Stream
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.stack.redis_server import RedisServerProcess, redis_server_binary
from tradeos_lab.tiers.bus import Bus, Delivery, parse_id

sys.path.insert(0, str(Path(__file__).parent))
from bus_support import bar_message, minute_of

MD = Stream.MARKET_DATA
HERE = Path(__file__).parent

pytestmark = pytest.mark.slow


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_consumer_sigkilled_after_its_effect_before_the_ack_applies_the_effect_once(
    redis_server_factory: Callable[..., RedisServerProcess],
    keys: Keys,
    namespace: str,
    settings_factory: Callable[..., Any],
) -> None:
    server = redis_server_factory("bus")
    client = make_redis(server.url, role="bus")
    bus = Bus(client, keys=keys, settings=settings_factory())
    bus.ensure_group(MD, "positions")
    messages = [bar_message(i) for i in range(3)]
    ids = bus.publish_many(MD, messages)
    script = [sys.executable, str(HERE / "bus_consumer_proc.py"), server.url, namespace]

    hung = subprocess.Popen([*script, "hang"])
    try:
        wait_for(lambda: client.llen(f"{namespace}:test:effect-done") == 1, 30, "the effect")
        assert bus.inspect.group_info(MD, "positions").pending == 3  # the batch, none acked
        hung.send_signal(signal.SIGKILL)
        assert hung.wait(10) == -signal.SIGKILL
    finally:
        if hung.poll() is None:
            hung.kill()
    assert float(client.get(f"{namespace}:test:position")) == messages[0].payload.volume  # type: ignore[arg-type,union-attr]

    restarted = subprocess.run([*script, "drain"], timeout=60, check=False)
    assert restarted.returncode == 0
    runs = [r.decode() for r in client.lrange(f"{namespace}:test:runs", 0, -1)]  # type: ignore[union-attr]
    # handled again on restart (its own pending drained first), the others for the first time
    assert runs == [f"{ids[0]} 1", f"{ids[0]} 2", f"{ids[1]} 2", f"{ids[2]} 2"]
    volumes = sum(m.payload.volume for m in messages)  # type: ignore[union-attr]
    assert float(client.get(f"{namespace}:test:position")) == volumes  # type: ignore[arg-type]
    assert bus.inspect.group_info(MD, "positions").pending == 0
    client.close()


def test_a_message_that_kills_its_consumer_is_the_only_one_dead_lettered(
    redis_server_factory: Callable[..., RedisServerProcess],
    keys: Keys,
    namespace: str,
    settings_factory: Callable[..., Any],
) -> None:
    server = redis_server_factory("bus")
    client = make_redis(server.url, role="bus")
    bus = Bus(client, keys=keys, settings=settings_factory())
    bus.ensure_group(MD, "positions")
    ids = bus.publish_many(MD, [bar_message(i) for i in range(6)])
    poison = 2  # the whole batch of six is pending when it kills the first process
    script = [sys.executable, str(HERE / "bus_consumer_proc.py"), server.url, namespace]

    exits = []
    for _ in range(6):  # max_deliveries is 2: the third process dead-letters it and drains
        exits.append(subprocess.run([*script, "poison", str(poison)], timeout=60).returncode)
        if exits[-1] == 0:
            break
    assert exits == [-signal.SIGKILL, -signal.SIGKILL, 0]
    dead = bus.inspect.dead_letters(MD)
    assert list(zip(dead["entry_id"], dead["reason"], strict=True)) == [
        (ids[poison], "max_deliveries")
    ]
    runs = [r.decode().split() for r in client.lrange(f"{namespace}:test:runs", 0, -1)]  # type: ignore[union-attr]
    handled = {entry_id for entry_id, _ in runs}
    assert handled == set(ids)  # every innocent one was handed to the handler
    poison_runs = [int(n) for entry_id, n in runs if entry_id == ids[poison]]
    assert poison_runs == [1, 2]  # counted once per process it killed, then set aside
    assert bus.inspect.group_info(MD, "positions").pending == 0
    client.close()


RATE = 2000  # messages per second from the producer
SECONDS = 3.0


@pytest.mark.parametrize(
    "case",
    ["redis7-sigterm", "redis7-sigkill", "redis6.2-sigterm", "redis6.2-sigkill"],
)
def test_bus_redis_restarted_mid_stream_producer_and_consumer_resume(
    redis_server_factory: Callable[..., RedisServerProcess],
    keys: Keys,
    settings_factory: Callable[..., Any],
    case: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    binary, how = case.split("-")
    server = redis_server_factory(
        "bus",
        appendonly=True,
        appendfsync="everysec",
        binary=redis_server_binary() if binary == "redis6.2" else None,
    )
    settings = settings_factory(claim_idle_ms=500)
    producer_bus = Bus(make_redis(server.url, role="bus"), keys=keys, settings=settings)
    consumer_bus = Bus(make_redis(server.url, role="bus"), keys=keys, settings=settings)
    consumer_bus.ensure_group(MD, "g")

    acked: dict[int, str] = {}  # message number -> entry id the XADD returned
    handled: set[int] = set()
    stop = threading.Event()
    total = int(RATE * SECONDS)

    def produce() -> None:
        start = time.monotonic()
        for i in range(total):
            message = bar_message(i)
            while True:
                try:
                    acked[i] = producer_bus.publish(MD, message)
                    break
                except DependencyUnavailable:
                    time.sleep(0.05)  # the client already retried with backoff; keep trying
            delay = start + (i + 1) / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def handle(d: Delivery) -> None:
        handled.add(minute_of(d.message))

    consumer = consumer_bus.consumer(MD, "g", "w1", block_ms=100)
    threads = [
        threading.Thread(target=produce, name="producer"),
        threading.Thread(target=consumer.run, args=(handle,), kwargs={"stop": stop}),
    ]
    for t in threads:
        t.start()
    try:
        time.sleep(SECONDS / 2)
        before = len(acked)
        killed_at_ms = int(time.time() * 1000)
        if how == "sigterm":
            server.stop()
        else:
            server.kill()
        time.sleep(0.3)  # producers and consumers see the server gone
        server.start()
        threads[0].join(SECONDS * 10)
        assert not threads[0].is_alive()
        assert len(acked) > before  # the producer resumed

        check = make_redis(server.url, role="bus")

        def in_stream() -> set[int]:
            rows: Any = check.xrange(keys.stream(MD))
            return {minute_of(decode(f[FIELD.encode()], stream=MD)) for _, f in rows}

        wait_for(lambda: in_stream() <= handled, 30, "the consumer to catch up")
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    stored = in_stream()
    lost = sorted(set(acked) - stored)
    group = consumer_bus.inspect.group_info(MD, "g")
    assert (group.pending, group.lag) == (0, 0)
    assert stored <= handled  # every entry the server kept was handled
    if how == "sigterm":
        assert lost == []  # a clean shutdown flushes the AOF: nothing acknowledged is lost
    else:
        # AOF everysec: at most the last second of writes may be lost (none, when the kernel
        # kept the written pages: a process crash is not a power cut)
        assert len(lost) <= RATE * 1.0
        for i in lost:
            assert killed_at_ms - parse_id(acked[i])[0] <= 2000
    with capsys.disabled():
        print(
            f"\n[bus AOF {binary} {how}] published {len(acked)} at {RATE}/s, "
            f"lost {len(lost)} acknowledged entries, handled {len(handled)}"
        )
    check.close()
