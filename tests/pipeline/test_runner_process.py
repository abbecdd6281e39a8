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
from pydantic import SecretStr
from runner_toys import STALL_VOLUME, bar

from tradeos_lab.contracts.ids import derived_message_id
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.secrets import SecretUrl
from tradeos_lab.settings import Settings

TOYS = Path(__file__).with_name("runner_toys.py")
ROOT = Path(__file__).resolve().parents[2]


def _environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a child process loads `settings` from (plus `extra` settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEOS_")}
    env["PYTHONPATH"] = str(ROOT)
    for name in ("namespace", "bus_url", "cache_url", "flags_url", "records_url", "lake_url"):
        value = getattr(settings, name)
        if isinstance(value, SecretUrl | SecretStr):
            value = value.get_secret_value()
        env[f"TRADEOS_{name.upper()}"] = str(value)
    env["TRADEOS_DATA_DIR"] = str(settings.data_dir)
    env.update({f"TRADEOS_{k.upper()}": v for k, v in extra.items()})
    return env


@pytest.fixture
def spawn(pipeline_lab: Lab, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start the toy relay as a service process of its own (killed at teardown if still alive)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(instance: str, *, batch: int, **extra: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{instance}-{len(started)}.log").open("wb")
        command = [sys.executable, "-m", "tradeos_lab.pipeline", f"{TOYS}:Relay"]
        process = subprocess.Popen(
            [*command, "--instance", instance, "--batch", str(batch)],
            env=_environment(pipeline_lab.settings, **extra),
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


def _relayed(lab: Lab) -> list[Any]:
    """The relay's outputs on the audit stream, in stream order."""
    rows = lab.bus.redis.xrange(lab.keys.stream(Stream.AUDIT))
    decoded = [lab.bus.decode(Stream.AUDIT, fields) for _, fields in rows]
    return [m for m in decoded if m.producer == "relay"]


def test_sigkill_mid_batch_then_restart_loses_nothing_and_duplicates_no_output(
    pipeline_lab: Lab, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    lab = pipeline_lab
    toy = f"{lab.settings.namespace}:toy"
    inputs = [bar(i, volume=STALL_VOLUME if i == 25 else 10.0) for i in range(30)]
    for message in inputs:
        lab.bus.publish(Stream.MARKET_DATA, message)

    first = spawn("relay-a", batch=10)
    _wait(lambda: lab.bus.redis.exists(f"{toy}:stalled"))  # inside the third batch's 6th bar
    assert len(_relayed(lab)) == 20, "two whole batches committed, the third not yet"
    assert lab.bus.redis.hlen(f"{toy}:handled") == 26, "the third batch was being handled"
    first.send_signal(signal.SIGKILL)
    first.wait()

    # The supervisor that saw it die deregisters it and starts a process with a new instance
    # name, which takes over the dead member's pending entries at once: well before the idle
    # reclaim (claim_idle_ms, 30 s here) would hand them over.
    assert lab.bus.inspect.group_info(Stream.MARKET_DATA, "relay").pending == 10
    lab.flags.workers.deregister("relay", "relay-a")
    second = spawn("relay-b", batch=10)
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
    assert redone == [20, 21, 22, 23, 24, 25], "the killed batch's handled bars were redone"
    group = lab.bus.inspect.group_info(Stream.MARKET_DATA, "relay")
    assert (group.pending, group.lag) == (0, 0)
    assert lab.bus.inspect.dead_letters(Stream.MARKET_DATA).empty


def test_sigterm_finishes_the_batch_in_hand_acks_it_and_exits_zero(
    pipeline_lab: Lab, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    lab = pipeline_lab
    toy = f"{lab.settings.namespace}:toy"
    lab.bus.redis.set(f"{toy}:slow", 0.1)  # each bar takes 100 ms: a batch of 5 takes 0.5 s
    for i in range(10):
        lab.bus.publish(Stream.MARKET_DATA, bar(i))

    process = spawn("relay-a", batch=5)
    _wait(lambda: lab.bus.redis.llen(f"{toy}:started") >= 1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0

    assert len(_relayed(lab)) == 5, "the batch in hand was finished and committed"
    assert lab.bus.redis.llen(f"{toy}:started") == 5, "no new batch was read after SIGTERM"
    group = lab.bus.inspect.group_info(Stream.MARKET_DATA, "relay")
    assert (group.pending, group.lag) == (0, 5)
    assert [w for w in lab.flags.workers.live_workers() if w.service == "relay"] == []
