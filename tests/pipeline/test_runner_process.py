"""A service as its own process: SIGKILL mid-batch loses nothing and duplicates nothing on the bus
after a restart; SIGTERM finishes the batch in hand, acks it and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from runner_toys import STALL_VOLUME, bar

from tradeos_lab.contracts import Message
from tradeos_lab.contracts.ids import derived_message_id
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.supervisor import service_instance, settings_environment
from tradeos_lab.settings import Settings

TOYS = Path(__file__).with_name("runner_toys.py")
ROOT = Path(__file__).resolve().parents[2]


def _environment(settings: Settings) -> dict[str, str]:
    """This environment without TRADEOS_* settings, plus those that load exactly `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEOS_")}
    return {**env, "PYTHONPATH": str(ROOT), **settings_environment(settings)}


@pytest.fixture
def spawn(pipeline_lab: Lab, tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start the toy relay with `tradeos-lab service` (killed at teardown if still alive); its
    worker instance is host-pid, as under the supervisor."""
    started: list[subprocess.Popen[bytes]] = []
    entry = "import sys; from tradeos_lab.cli import main; main(sys.argv[1:])"

    def start() -> subprocess.Popen[bytes]:
        log = (tmp_path / f"relay-{len(started)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-c", entry, "service", f"{TOYS}:Relay"],
            env=_environment(pipeline_lab.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait(condition: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def _publish_at_once(lab: Lab, messages: list[Message]) -> None:
    pipe = lab.bus.redis.pipeline(transaction=True)
    for message in messages:
        lab.bus.queue_publish(pipe, Stream.MARKET_DATA, message)
    pipe.execute()


def _relayed(lab: Lab) -> list[Any]:
    """The relay's outputs on the audit stream, in stream order."""
    rows = lab.bus.redis.xrange(lab.keys.stream(Stream.AUDIT))
    decoded = [lab.bus.decode(Stream.AUDIT, fields) for _, fields in rows]
    return [m for m in decoded if m.producer == "relay"]


def test_sigkill_mid_batch_then_restart_loses_nothing_and_duplicates_no_output(
    pipeline_lab: Lab, spawn: Callable[[], subprocess.Popen[bytes]]
) -> None:
    lab = pipeline_lab
    toy = f"{lab.settings.namespace}:toy"
    inputs = [bar(i, volume=STALL_VOLUME if i == 25 else 10.0) for i in range(30)]
    first = spawn()
    lab.bus.publish_many(Stream.MARKET_DATA, inputs[:10])
    _wait(lambda: len(_relayed(lab)) == 10)  # a first batch handled and committed
    _publish_at_once(lab, inputs[10:])  # one MULTI: the blocked read wakes to all 20
    _wait(lambda: lab.bus.redis.exists(f"{toy}:stalled"))  # the second batch's 16th bar
    assert len(_relayed(lab)) == 10, "nothing of the batch in hand is committed yet"
    assert lab.bus.redis.hlen(f"{toy}:handled") == 26, "15 bars of it were handled"
    first.send_signal(signal.SIGKILL)
    first.wait()

    # The supervisor that saw it die deregisters it and starts a process with a new instance
    # name, which takes over the dead member's pending entries at once: well before the idle
    # reclaim (claim_idle_ms, 30 s here) would hand them over.
    assert lab.bus.inspect.group_info(Stream.MARKET_DATA, "relay").pending == 20
    lab.flags.workers.deregister("relay", service_instance(first.pid))
    second = spawn()
    _wait(lambda: len(_relayed(lab)) >= 30, timeout=20)
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0

    outputs = _relayed(lab)
    ids = [m.message_id for m in outputs]
    assert len(ids) == len(set(ids)) == 30, "no output twice"
    expected = {derived_message_id(m.message_id, stage="relay", index=0) for m in inputs}
    assert set(ids) == expected, "every output carries the id derived from its input"
    handled = {k.decode(): int(v) for k, v in lab.bus.redis.hgetall(f"{toy}:handled").items()}
    redone = sorted(i for i, m in enumerate(inputs) if handled[m.message_id] == 2)
    assert redone == list(range(10, 26)), "the killed batch's handled bars were redone"
    group = lab.bus.inspect.group_info(Stream.MARKET_DATA, "relay")
    assert (group.pending, group.lag) == (0, 0)
    assert lab.bus.inspect.dead_letters(Stream.MARKET_DATA).empty


def test_sigterm_finishes_the_batch_in_hand_acks_it_and_exits_zero(
    pipeline_lab: Lab, spawn: Callable[[], subprocess.Popen[bytes]]
) -> None:
    lab = pipeline_lab
    toy = f"{lab.settings.namespace}:toy"
    lab.bus.redis.set(f"{toy}:slow", 0.1)  # each bar takes 100 ms: a batch of 5 takes 0.5 s
    lab.bus.publish_many(Stream.MARKET_DATA, [bar(i) for i in range(5)])
    process = spawn()
    _wait(lambda: lab.bus.redis.llen(f"{toy}:started") >= 1)
    lab.bus.publish_many(Stream.MARKET_DATA, [bar(i) for i in range(5, 10)])
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0

    assert len(_relayed(lab)) == 5, "the batch in hand was finished and committed"
    assert lab.bus.redis.llen(f"{toy}:started") == 5, "no new batch was read after SIGTERM"
    group = lab.bus.inspect.group_info(Stream.MARKET_DATA, "relay")
    assert (group.pending, group.lag) == (0, 5)
    assert [w for w in lab.flags.workers.live_workers() if w.service == "relay"] == []


def test_a_service_process_collects_young_objects_every_twenty_thousand_allocations() -> None:
    """A stage makes thousands of short-lived objects a batch: its process sets the cyclic
    collector's young threshold above Python's 700 once its startup objects are frozen."""
    probe = (
        "import gc; from tradeos_lab.pipeline.runner import freeze_startup_objects; "
        "default = gc.get_threshold(); freeze_startup_objects(); "
        "print(default[0], *gc.get_threshold(), gc.get_freeze_count() > 0)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout.split()
    assert shown == ["700", "20000", "10", "10", "True"]
