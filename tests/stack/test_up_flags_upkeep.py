"""`tradeos-lab up` keeps the flags tier: it drops (and audits) expired agent switches and reaps
workers whose heartbeats stopped."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tradeos_lab as tl
from tradeos_lab import operator
from tradeos_lab.keys import Stream
from tradeos_lab.stack.owner import FLAGS_UPKEEP_SECONDS, StackOwner

# Rounds of upkeep a test waits for before it calls the upkeep missing.
ROUNDS = 5


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A running stack owner: what `tradeos-lab up` runs."""
    owner = StackOwner(tl.load_settings(data_dir=tmp_path / "lab"))
    owner.start()
    yield tmp_path / "lab"
    owner.stop()


def eventually(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + ROUNDS * FLAGS_UPKEEP_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_a_running_up_drops_expired_agent_switches_and_audits_them(data_dir: Path) -> None:
    with tl.connect(data_dir=data_dir) as lab:
        operator.arm(lab, actor="user:ops", reason="start of day")
        lab.kill_switches.engage(
            "symbol", "HALTED", target="AAPL", ttl_seconds=0.5, actor="agent:risk", reason="gap"
        )
        registry = lab.keys.kill_switches()
        assert lab.flags.redis.hlen(registry) == 2  # the sentinel and the agent switch

        assert eventually(lambda: lab.flags.redis.hlen(registry) == 1)
        actions = list(lab.bus.inspect.read(Stream.AUDIT)["payload.action"])
    assert actions == ["kill_switch.armed", "kill_switch.engaged", "kill_switch.expired"]


def test_a_running_up_reaps_workers_whose_heartbeats_stopped(data_dir: Path) -> None:
    with tl.connect(data_dir=data_dir) as lab:
        long_ago = time.time() - 3600
        lab.flags.workers.heartbeat("execution", "gone-1", {"pid": 1}, now=long_ago)
        assert [w.instance for w in lab.flags.workers.stale_workers()] == ["gone-1"]

        gone = lab.keys.heartbeat("execution", "gone-1")
        # a reap takes the worker off the registry, then deletes its info: wait for both
        assert eventually(
            lambda: lab.flags.workers.stale_workers() == [] and not lab.flags.redis.exists(gone)
        )
        # the owner's own worker, beating, stays
        assert [w.service for w in lab.flags.workers.live_workers()] == ["stack"]
