"""The runner on the machine's Redis: consume -> handle -> publish + ack in one MULTI/EXEC, timers,
dead letters, heartbeats and the health endpoint."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import redis
from runner_toys import REJECT_VOLUME, Relay, Ticker, bar

import tradeos_lab as tl
from tradeos_lab.contracts import FIELD, Message
from tradeos_lab.contracts.ids import derived_message_id
from tradeos_lab.errors import DependencyUnavailable, PortInUseError, ValidationError
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.observability.logs import JsonFormatter
from tradeos_lab.pipeline import Service, ServiceContext, ServiceRunner
from tradeos_lab.pipeline.runner import resolve_service
from tradeos_lab.secrets import SecretUrl
from tradeos_lab.settings import Settings, SharedRedisServerWarning


def _runner(lab: Lab, cls: type[Service] = Relay, **kwargs: Any) -> ServiceRunner:
    return ServiceRunner(cls, ServiceContext(lab, lab.settings, f"{cls.name}-1"), **kwargs)


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def _messages(lab: Lab, stream: Stream, producer: str) -> list[Any]:
    """The messages `producer` put on `stream` (the armed kill switches audit there too)."""
    decoded = [
        lab.bus.decode(stream, fields)
        for _, fields in lab.bus.redis.xrange(lab.keys.stream(stream))
    ]
    return [m for m in decoded if m.producer == producer]


@pytest.fixture
def monitor(pipeline_lab: Lab) -> Iterator[list[dict[str, Any]]]:
    """Every command the Redis server executes meanwhile (MONITOR), as redis-py parses them."""
    seen: list[dict[str, Any]] = []
    done = threading.Event()
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    ready = threading.Event()

    def watch() -> None:
        with client.monitor() as m:
            ready.set()
            for command in m.listen():
                seen.append(command)
                if done.is_set() and "MONITOR-END" in command["command"]:
                    return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    ready.wait(5)
    time.sleep(0.1)
    yield seen
    done.set()
    client.echo("MONITOR-END")
    thread.join(5)
    client.close()


def test_outputs_and_the_ack_of_their_input_commit_in_one_multi_exec(
    pipeline_lab: Lab, monitor: list[dict[str, Any]]
) -> None:
    lab = pipeline_lab
    inputs = [bar(i) for i in range(3)]
    for message in inputs:
        lab.bus.publish(Stream.MARKET_DATA, message)
    runner = _runner(lab)
    result = runner.drain()
    assert result.handled == 3
    time.sleep(0.2)  # let MONITOR catch up with the server

    input_key, output_key = lab.keys.stream(Stream.MARKET_DATA), lab.keys.stream(Stream.AUDIT)
    acks = [c for c in monitor if c["command"].startswith(f"XACK {input_key} ")]
    assert len(acks) == 1, "one batch, settled once"
    client = (acks[0]["client_address"], acks[0]["client_port"])
    ours = [c["command"] for c in monitor if (c["client_address"], c["client_port"]) == client]
    ack_at = next(i for i, c in enumerate(ours) if c.startswith(f"XACK {input_key} "))
    multi = max(i for i, c in enumerate(ours[:ack_at]) if c == "MULTI")
    exec_ = ack_at + next(i for i, c in enumerate(ours[ack_at:]) if c == "EXEC")
    inside = ours[multi:exec_]
    assert sum(c.startswith(f"XADD {output_key} ") for c in inside) == 3
    assert all(f"XADD {output_key} " not in c for c in ours[:multi] + ours[exec_:])

    outputs = _messages(lab, Stream.AUDIT, "relay")
    assert [m.message_id for m in outputs] == [
        derived_message_id(m.message_id, stage="relay", index=0) for m in inputs
    ]
    assert [m.causation_id for m in outputs] == [m.message_id for m in inputs]
    assert [m.correlation_id for m in outputs] == [m.correlation_id for m in inputs]
    assert lab.bus.inspect.group_info(Stream.MARKET_DATA, "relay").pending == 0


def test_timers_publish_their_messages(pipeline_lab: Lab) -> None:
    runner = _runner(pipeline_lab, Ticker, heartbeat_s=0.05)
    assert runner.fire_timers() == 1
    running = runner.run_in_thread()
    try:
        _wait(lambda: len(_messages(pipeline_lab, Stream.AUDIT, "ticker")) >= 4)
    finally:
        running.stop()
    assert not running.alive
    actions = {m.payload.action for m in _messages(pipeline_lab, Stream.AUDIT, "ticker")}
    assert actions == {"clock.tick"}
    assert runner.counts.timer_messages >= 3


def test_a_malformed_entry_is_dead_lettered_with_its_reason_and_the_runner_goes_on(
    pipeline_lab: Lab,
) -> None:
    lab = pipeline_lab
    lab.bus.publish(Stream.MARKET_DATA, bar(0))
    lab.bus.redis.xadd(lab.keys.stream(Stream.MARKET_DATA), {FIELD: b'{"schema": "nonsense"}'})
    lab.bus.publish(Stream.MARKET_DATA, bar(1))
    runner = _runner(lab)
    result = runner.drain()
    assert (result.handled, result.dead_lettered) == (2, 1)
    dead = lab.bus.inspect.dead_letters(Stream.MARKET_DATA)
    assert list(dead["reason"]) == ["invalid"]
    assert "ContractError" in dead["error"].iloc[0]
    assert len(_messages(lab, Stream.AUDIT, "relay")) == 2
    (risk_event,) = _messages(lab, Stream.RISK_EVENTS, lab.bus.producer)
    assert risk_event.payload.kind == "dead_letter"


def test_a_message_the_service_keeps_refusing_is_dead_lettered_after_max_deliveries(
    pipeline_settings: Settings,
) -> None:
    settings = pipeline_settings.model_copy(update={"max_deliveries": 2, "claim_idle_ms": 100})
    with tl.connect(settings, start=False) as lab:
        lab.bus.publish(Stream.MARKET_DATA, bar(0, volume=REJECT_VOLUME))
        lab.bus.publish(Stream.MARKET_DATA, bar(1))
        runner = _runner(lab)
        running = runner.run_in_thread()
        try:
            _wait(lambda: runner.counts.dead_lettered == 1 and runner.counts.handled == 1)
        finally:
            running.stop()
        dead = lab.bus.inspect.dead_letters(Stream.MARKET_DATA)
        assert list(dead["reason"]) == ["handler_failed"]
        assert "refused by the relay" in dead["error"].iloc[0]
        assert runner.counts.failed == 2
        assert lab.bus.inspect.group_info(Stream.MARKET_DATA, "relay").pending == 0


def test_a_running_service_heartbeats_and_answers_healthz_and_metrics(pipeline_lab: Lab) -> None:
    lab = pipeline_lab
    for i in range(5):
        lab.bus.publish(Stream.MARKET_DATA, bar(i))
    runner = _runner(lab, heartbeat_s=0.05)
    running = runner.run_in_thread()
    try:
        # run_in_thread returns once the service serves /healthz and is in the registry
        assert running.health_url is not None
        assert [w.instance for w in lab.flags.workers.live_workers()] == ["relay-1"]
        _wait(lambda: runner.counts.handled == 5)

        def beat() -> dict[str, str]:
            workers = [w for w in lab.flags.workers.live_workers() if w.service == "relay"]
            return workers[0].info if workers else {}

        _wait(lambda: beat().get("handled") == "5")
        info = beat()
        assert (info["status"], info["lag"], info["pending"]) == ("running", "0", "0")
        assert info["inputs"] == "market_data"
        assert info["health_url"] == running.health_url
        with urllib.request.urlopen(f"{running.health_url}/healthz", timeout=5) as reply:
            health = json.load(reply)
        assert health["status"] == "up"
        assert health["dependencies"]["service"]["handled"] == 5
        with urllib.request.urlopen(f"{running.health_url}/metrics", timeout=5) as reply:
            metrics = reply.read().decode()
        assert 'tradeos_pipeline_handled_total{service="relay"}' in metrics
    finally:
        running.stop()
    assert not running.alive
    assert [w for w in lab.flags.workers.live_workers() if w.service == "relay"] == []


def test_lag_counts_what_the_group_has_not_read(pipeline_lab: Lab) -> None:
    lab = pipeline_lab
    runner = _runner(lab)
    runner.run_once()  # creates the group
    for i in range(4):
        lab.bus.publish(Stream.MARKET_DATA, bar(i))
    runner.heartbeat()
    (worker,) = lab.flags.workers.live_workers()
    assert (worker.info["lag"], worker.info["pending"]) == ("4", "0")


def test_service_references_resolve_or_name_the_problem() -> None:
    assert resolve_service("tests/pipeline/runner_toys.py:Relay").name == "relay"
    with pytest.raises(ValidationError, match="does not name a Service subclass"):
        resolve_service("tests/pipeline/runner_toys.py:bar")
    with pytest.raises(ValidationError, match="choose one of"):
        resolve_service("relay")
    with pytest.raises(ValidationError, match="cannot import service module"):
        resolve_service("no_such_module:Relay")


def test_pending_entries_of_a_departed_member_are_taken_over_and_a_live_ones_are_not(
    pipeline_lab: Lab,
) -> None:
    lab = pipeline_lab
    for i in range(3):
        lab.bus.publish(Stream.MARKET_DATA, bar(i))
    other = lab.bus.consumer(Stream.MARKET_DATA, "relay", "relay-0", count=10)
    deliveries = other.messages(block_ms=0)
    next(deliveries)  # relay-0 holds the batch of three, unacked
    lab.flags.workers.heartbeat("relay", "relay-0")
    runner = _runner(lab)
    assert runner.adopt_orphans() == 0, "a live member keeps its entries"
    lab.flags.workers.deregister("relay", "relay-0")
    assert runner.adopt_orphans() == 3
    result = runner.drain()
    assert result.handled == 3
    assert len(_messages(lab, Stream.AUDIT, "relay")) == 3
    group = lab.bus.inspect.group_info(Stream.MARKET_DATA, "relay")
    assert group.pending == 0


def test_log_lines_of_a_handled_message_carry_its_correlation_id(pipeline_lab: Lab) -> None:
    good, refused = bar(0), bar(1, volume=REJECT_VOLUME)
    pipeline_lab.bus.publish_many(Stream.MARKET_DATA, [good, refused])
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter("relay"))
    logger = logging.getLogger("tradeos_lab.pipeline")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)  # a line per handled message only at DEBUG (1000s a second)
    try:
        result = _runner(pipeline_lab).run_once()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert (result.handled, result.failed) == (1, 1)
    handled, failed = [json.loads(text) for text in lines.getvalue().splitlines()]
    assert (handled["severity"], handled["correlation_id"]) == ("DEBUG", good.correlation_id)
    assert handled["message_id"] == good.message_id
    assert (failed["severity"], failed["correlation_id"]) == ("WARNING", refused.correlation_id)
    assert failed["message_id"] == refused.message_id
    assert failed["service"] == "relay" and "refused by the relay" in failed["message"]


class Flaky(Relay):
    """A relay whose store is down for its first two attempts."""

    name = "flaky"
    attempts = 0

    def handle(self, message: Message) -> Sequence[Message]:
        type(self).attempts += 1
        if type(self).attempts <= 2:
            raise DependencyUnavailable("the records database does not answer")
        return super().handle(message)


def test_a_transient_failure_is_retried_in_place_without_counting_a_delivery(
    pipeline_lab: Lab,
) -> None:
    lab = pipeline_lab
    lab.bus.publish(Stream.MARKET_DATA, bar(0))
    result = _runner(lab, Flaky).run_once()
    assert (result.handled, result.failed, result.dead_lettered) == (1, 0, 0)
    assert Flaky.attempts == 3
    assert len(_messages(lab, Stream.AUDIT, "flaky")) == 1
    assert lab.bus.inspect.dead_letters(Stream.MARKET_DATA).empty


def test_a_service_runs_on_the_embedded_stack(embedded_pipeline_lab: Lab) -> None:
    lab = embedded_pipeline_lab
    inputs = [bar(i) for i in range(3)]
    lab.bus.publish_many(Stream.MARKET_DATA, inputs)
    runner = _runner(lab, heartbeat_s=0.05)
    running = runner.run_in_thread()
    try:
        _wait(lambda: runner.counts.handled == 3)
        _wait(lambda: any(w.service == "relay" for w in lab.flags.workers.live_workers()))
    finally:
        running.stop()
    outputs = _messages(lab, Stream.AUDIT, "relay")
    assert [m.causation_id for m in outputs] == [m.message_id for m in inputs]
    assert lab.bus.inspect.group_info(Stream.MARKET_DATA, "relay").pending == 0


def test_a_service_goes_on_handling_while_the_flags_tier_is_down_and_healthz_says_so(
    redis_server_factory: Callable[..., Any],
    pipeline_settings: Settings,
) -> None:
    flags_server = redis_server_factory("flags", policy="volatile-ttl")
    settings = pipeline_settings.model_copy(update={"flags_url": SecretUrl(flags_server.url)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        lab = tl.connect(settings, start=False)
    try:
        runner = _runner(lab, heartbeat_s=0.05)
        running = runner.run_in_thread()
        try:
            flags_server.stop()
            _wait(lambda: runner.check()["flags"]["state"] == "degraded")
            with urllib.request.urlopen(f"{running.health_url}/healthz", timeout=5) as reply:
                assert json.load(reply)["status"] == "degraded"
            lab.bus.publish_many(Stream.MARKET_DATA, [bar(i) for i in range(3)])
            _wait(lambda: runner.counts.handled == 3)
            flags_server.start()
            _wait(lambda: runner.check()["flags"]["state"] == "up")
            _wait(lambda: [w.info["handled"] for w in lab.flags.workers.live_workers()] == ["3"])
        finally:
            running.stop()
        assert len(_messages(lab, Stream.AUDIT, "relay")) == 3
    finally:
        lab.close()


def test_a_service_survives_the_bus_going_away_and_handles_what_comes_after(
    redis_server_factory: Callable[..., Any],
    pipeline_settings: Settings,
) -> None:
    bus_server = redis_server_factory("bus")
    settings = pipeline_settings.model_copy(update={"bus_url": SecretUrl(bus_server.url)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        lab = tl.connect(settings, start=False)
    try:
        lab.bus.publish(Stream.MARKET_DATA, bar(0))
        runner = _runner(lab, heartbeat_s=0.05)
        running = runner.run_in_thread()
        try:
            _wait(lambda: runner.counts.handled == 1)
            bus_server.stop()
            _wait(lambda: runner.check()["bus"]["state"] == "degraded")
            assert running.alive
            bus_server.start()
            lab.bus.publish_many(Stream.MARKET_DATA, [bar(i) for i in range(1, 3)])
            _wait(lambda: runner.counts.handled == 3, timeout=30)
            _wait(lambda: runner.check()["bus"]["state"] == "up")
        finally:
            running.stop()
        assert len(_messages(lab, Stream.AUDIT, "relay")) >= 2  # those after the restart
    finally:
        lab.close()


def test_run_in_thread_raises_when_the_service_cannot_start(pipeline_lab: Lab) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runner = _runner(pipeline_lab, health_port=port)
        with pytest.raises(PortInUseError, match=f"{port} is already in use"):
            runner.run_in_thread()
    assert runner.status == "stopped"
    assert pipeline_lab.flags.workers.live_workers() == []


class _RelayThatReadOrders(Relay):
    """Relay as it is after an earlier version of it read `orders` too."""

    retired_inputs = (Stream.ORDERS,)


def test_a_service_drops_its_group_on_a_stream_it_no_longer_reads(pipeline_lab: Lab) -> None:
    lab = pipeline_lab
    lab.bus.ensure_group(Stream.ORDERS, "relay")
    lab.bus.ensure_group(Stream.ORDERS, "positions")  # another service's group stays
    runner = _runner(lab, _RelayThatReadOrders)
    running = runner.run_in_thread()
    try:
        _wait(lambda: "relay" not in set(lab.bus.inspect.groups(Stream.ORDERS)["group"]))
    finally:
        running.stop()
    assert set(lab.bus.inspect.groups(Stream.ORDERS)["group"]) == {"positions"}
    assert lab.bus.drop_group(Stream.ORDERS, "relay") is False, "gone already"
    assert lab.bus.drop_group(Stream.NEWS_RAW, "relay") is False, "no such stream"
