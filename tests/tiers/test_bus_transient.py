"""A handler whose own store is down: retried in place, uncounted, never silently dead-lettered.

The handler writes to its own redis-server (this test's, stopped and restarted); the bus is the
machine's Redis 7. The outage lasts `OUTAGE_S`, 30 s: thirty times the claim timeout, so the
waiting entries would long have been reclaimed and counted had the consumer not kept them claimed.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tradeos_lab.contracts import FIELD, RiskEventMessage, decode
from tradeos_lab.errors import DependencyUnavailable
from tradeos_lab.keys import Keys, Stream
from tradeos_lab.stack.redis_server import RedisServerProcess
from tradeos_lab.tiers.bus import Bus, Delivery

sys.path.insert(0, str(Path(__file__).parent))
from bus_support import bar_message, minute_of

MD = Stream.MARKET_DATA
OUTAGE_S = 30.0

pytestmark = pytest.mark.slow


def store_writer(store: RedisServerProcess) -> tuple[redis.Redis, Callable[[Delivery], None]]:
    """A handler that appends each bar's minute to a list on `store`, like a service's write."""
    client = redis.Redis.from_url(
        store.url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )

    def handle(d: Delivery) -> None:
        try:
            client.rpush("written", minute_of(d.message))
        except redis.ConnectionError as e:
            raise DependencyUnavailable("the handler's store is down") from e

    return client, handle


def test_a_handler_whose_store_is_down_is_retried_in_place_and_nothing_is_dead_lettered(
    shared_redis: redis.Redis,
    redis_server_factory: Callable[..., RedisServerProcess],
    keys: Keys,
    settings_factory: Callable[..., Any],
) -> None:
    # claim_idle_ms well below the outage: a second consumer would reclaim (and count) the
    # waiting entries unless the first keeps them claimed while it retries
    settings = settings_factory(max_deliveries=3, claim_idle_ms=1000, transient_retry_s=60)
    bus = Bus(shared_redis, keys=keys, settings=settings)
    store = redis_server_factory("cache")
    client, write = store_writer(store)
    deliveries: list[tuple[str, int]] = []

    def handle(d: Delivery) -> None:
        write(d)
        deliveries.append((d.consumer, d.deliveries))

    bus.publish_many(MD, [bar_message(i) for i in range(5)])
    store.stop()
    stop = threading.Event()
    consumers = [bus.consumer(MD, "g", name, block_ms=100) for name in ("w1", "w2")]
    threads = [
        threading.Thread(target=c.run, args=(handle,), kwargs={"stop": stop}) for c in consumers
    ]
    for t in threads:
        t.start()
        time.sleep(0.3)  # w1 reads the whole batch first
    try:
        time.sleep(OUTAGE_S)
        store.start()
        deadline = time.monotonic() + 20
        while len(deliveries) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert [int(x) for x in client.lrange("written", 0, -1)] == [0, 1, 2, 3, 4]  # type: ignore[union-attr]
    assert deliveries == [("w1", 1)] * 5  # first delivery each, none reclaimed by w2
    assert shared_redis.xlen(keys.dead_letter(MD)) == 0
    assert bus.inspect.group_info(MD, "g").pending == 0
    client.close()


def test_a_dependency_down_past_transient_retry_s_dead_letters_with_a_risk_event(
    shared_redis: redis.Redis,
    redis_server_factory: Callable[..., RedisServerProcess],
    keys: Keys,
    settings_factory: Callable[..., Any],
) -> None:
    settings = settings_factory(max_deliveries=3, transient_retry_s=1.0)
    bus = Bus(shared_redis, keys=keys, settings=settings)
    store = redis_server_factory("cache")
    client, write = store_writer(store)
    attempts: list[int] = []

    def handle(d: Delivery) -> None:
        attempts.append(d.deliveries)
        write(d)

    entry_id = bus.publish(MD, bar_message(0))
    store.stop()
    total = bus.consumer(MD, "g", "w1", block_ms=50).run(handle, idle_timeout_s=0.5)
    assert total.dead_lettered == 1
    assert len(attempts) > 1 and set(attempts) == {1}  # retried in place, one delivery
    row = bus.inspect.dead_letters(MD).iloc[0]
    assert (row["entry_id"], row["reason"], row["deliveries"]) == (
        entry_id,
        "dependency_unavailable",
        1,
    )
    assert "stayed unavailable" in row["error"] and "DependencyUnavailable" in row["error"]
    rows: Any = shared_redis.xrange(keys.stream(Stream.RISK_EVENTS))
    events = [decode(f[FIELD.encode()], stream=Stream.RISK_EVENTS) for _, f in rows]
    (event,) = [e for e in events if isinstance(e, RiskEventMessage)]
    assert event.payload.data["reason"] == "dependency_unavailable"
    assert "stayed unavailable" in event.payload.detail
    assert bus.inspect.group_info(MD, "g").pending == 0
    client.close()
