"""A stage's outputs and the ack of its input commit together; re-handling emits the same ids."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tradeos_lab.contracts import FIELD, Direction, Message, RawSignal, decode, derive
from tradeos_lab.contracts.ids import derived_message_id, is_message_id
from tradeos_lab.errors import ContractError, StoreError
from tradeos_lab.keys import Keys, Stream
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.stack.redis_server import RedisServerProcess
from tradeos_lab.tiers.bus import Bus, Delivery

sys.path.insert(0, str(Path(__file__).parent))
from bus_support import bar_message

MD = Stream.MARKET_DATA
RAW = Stream.SIGNALS_RAW


def signal_for(d: Delivery) -> Message:
    bar = d.message
    payload = RawSignal(
        strategy="momo",
        symbol="AAPL",
        timeframe="1m",
        ts=bar.payload.ts,  # type: ignore[union-attr]
        direction=Direction.LONG,
        strength=0.5,
        confidence=0.7,
        features={"rsi": 61.0},
        source_message_id=bar.message_id,
    )
    return derive(bar, payload, producer="signal-engine")


def signals(client: redis.Redis, keys: Keys) -> list[Message]:
    rows: Any = client.xrange(keys.stream(RAW))
    return [decode(f[FIELD.encode()], stream=RAW) for _, f in rows]


@pytest.fixture
def bus(shared_redis: redis.Redis, keys: Keys, settings_factory: Callable[..., Any]) -> Bus:
    return Bus(shared_redis, keys=keys, settings=settings_factory(claim_idle_ms=100))


def test_handler_outputs_are_published_with_ids_derived_from_the_input_and_the_input_acked(
    bus: Bus, shared_redis: redis.Redis, keys: Keys
) -> None:
    bars = [bar_message(i) for i in range(3)]
    bus.publish_many(MD, bars)
    result = bus.consumer(MD, "signal-engine", "w1", block_ms=0).poll(
        lambda d: [signal_for(d), signal_for(d)]
    )
    assert result.handled == 3
    out = signals(shared_redis, keys)
    assert [m.message_id for m in out] == [
        derived_message_id(b.message_id, stage="signal-engine", index=i)
        for b in bars
        for i in range(2)
    ]
    assert all(is_message_id(m.message_id) for m in out)
    assert [m.causation_id for m in out] == [b.message_id for b in bars for _ in range(2)]
    assert bus.inspect.group_info(MD, "signal-engine").pending == 0


def test_a_re_handled_message_emits_outputs_with_the_same_ids(
    bus: Bus, shared_redis: redis.Redis, keys: Keys
) -> None:
    bar = bar_message(1)
    bus.publish(MD, bar)
    bus.publish(MD, bar)  # a producer's XADD retried after a lost reply: the same message twice
    bus.consumer(MD, "signal-engine", "w1", block_ms=0).poll(signal_for)
    first, second = signals(shared_redis, keys)
    assert first.message_id == second.message_id  # downstream can tell the duplicate
    other_stage = bus.consumer(MD, "another-stage", "w1", block_ms=0)
    other_stage.poll(signal_for)
    assert signals(shared_redis, keys)[-1].message_id != first.message_id


def test_an_output_refused_as_the_batch_commits_raises_instead_of_passing_silently(
    bus: Bus, shared_redis: redis.Redis, keys: Keys
) -> None:
    bus.publish(MD, bar_message(1))
    shared_redis.set(keys.stream(RAW), "not a stream")  # the XADD fails inside EXEC
    with pytest.raises(StoreError, match="WRONGTYPE"):
        bus.consumer(MD, "signal-engine", "w1", block_ms=0).poll(signal_for)


def test_outputs_and_the_ack_commit_all_or_nothing(
    redis_server_factory: Callable[..., RedisServerProcess],
    keys: Keys,
    settings_factory: Callable[..., Any],
) -> None:
    server = redis_server_factory("bus")
    client = make_redis(server.url, role="bus")
    bus = Bus(client, keys=keys, settings=settings_factory(claim_idle_ms=100))
    bar = bar_message(1)
    bus.publish(MD, bar)
    admin = make_redis(server.url, role="bus")

    def out_of_memory_after_handling(d: Delivery) -> Message:
        admin.config_set("maxmemory", 1)  # the server now refuses writes (noeviction)
        return signal_for(d)

    consumer = bus.consumer(MD, "signal-engine", "w1", block_ms=0)
    with pytest.raises(StoreError, match="maxmemory"):
        consumer.poll(out_of_memory_after_handling)
    # the XACK alone would have gone through (it needs no memory); in the MULTI it did not
    assert bus.inspect.group_info(MD, "signal-engine").pending == 1
    assert client.exists(keys.stream(RAW)) == 0

    admin.config_set("maxmemory", 0)
    consumer.restart()
    assert consumer.poll(signal_for).handled == 1
    (out,) = signals(client, keys)
    assert out.message_id == derived_message_id(bar.message_id, stage="signal-engine", index=0)
    assert bus.inspect.group_info(MD, "signal-engine").pending == 0
    client.close()
    admin.close()


def test_a_handler_returning_something_else_than_messages_fails_its_delivery(
    bus: Bus, shared_redis: redis.Redis, keys: Keys
) -> None:
    bus.publish(MD, bar_message(1))
    result = bus.consumer(MD, "g", "w1", block_ms=0).poll(lambda d: ["not a message"])
    assert (result.handled, result.failed) == (0, 1)
    assert bus.inspect.group_info(MD, "g").pending == 1
    with pytest.raises(ContractError):
        bus.encode(RAW, bar_message(2))


def test_queue_publish_commits_an_output_with_an_apply_once_effect_and_its_ack(
    bus: Bus, shared_redis: redis.Redis, keys: Keys
) -> None:
    bus.publish(MD, bar_message(1))
    applied: list[bool] = []

    def handle(d: Delivery) -> None:
        out = signal_for(d)
        applied.append(bus.apply_once(d, lambda pipe: bus.queue_publish(pipe, RAW, out), ack=True))

    bus.consumer(MD, "g", "w1", block_ms=0).poll(handle)
    assert applied == [True]
    assert len(signals(shared_redis, keys)) == 1
    assert bus.inspect.group_info(MD, "g").pending == 0
