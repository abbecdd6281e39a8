"""Fault injection on the flags tier with its own redis-server: crash, restart, memory pressure."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tradeos_lab.errors import DependencyUnavailable
from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.stack.redis_server import RedisServerProcess
from tradeos_lab.tiers.flags import Decision, KillMode, KillSwitches

ServerFactory = Callable[..., RedisServerProcess]

# The bound the kill switch promises on a stalled flags server (the default flags connect + read
# timeouts are 0.25 s each, and a timeout is never retried).
STALLED_CHECK_BOUND_S = 1.0


@pytest.fixture
def trail() -> list[dict[str, object]]:
    """The audit records of the test's kill-switch changes."""
    return []


@contextmanager
def stalled(server: RedisServerProcess) -> Iterator[None]:
    """The server process is frozen (SIGSTOP): connections stay open, nothing answers."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def timed_check(switches: KillSwitches) -> tuple[Decision | None, float]:
    """Run one order check in a thread; a check that hangs comes back as None after 3 s."""
    out: list[Decision] = []
    started = time.monotonic()
    worker = threading.Thread(
        target=lambda: out.append(switches.check_order("momentum", "AAPL", "buy", 1, book=None)),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=3 * STALLED_CHECK_BOUND_S)
    return (out[0] if out else None), time.monotonic() - started


@pytest.mark.parametrize("connection", ["open", "new"])
def test_a_stalled_flags_server_reads_halted_within_one_second(
    redis_server_factory: ServerFactory,
    keys: Keys,
    settings_factory: Callable[..., Settings],
    trail: list[dict[str, object]],
    connection: str,
) -> None:
    server = redis_server_factory("flags", policy="volatile-ttl", maxmemory="16mb")
    settings = settings_factory()
    client = make_redis(server.url, role="flags", settings=settings)
    switches = KillSwitches(client, keys=keys, source="manual", audit=trail.append)
    switches.arm(actor="ops", reason="start")
    assert switches.check_order("momentum", "AAPL", "buy", 1, book=None).allowed
    if connection == "new":  # the next command has to connect and authenticate first
        client.connection_pool.disconnect()
    with stalled(server):
        decision, elapsed = timed_check(switches)
        assert decision is not None, "the check hung on a stalled flags server"
        assert elapsed < STALLED_CHECK_BOUND_S
        assert not decision.allowed
        assert decision.mode is KillMode.HALTED
        assert "unreachable" in decision.reason
    assert switches.check_order("momentum", "AAPL", "buy", 1, book=None).allowed
    client.close()


def test_an_unreachable_flags_tier_reads_halted_for_every_order(
    redis_server_factory: ServerFactory, keys: Keys, trail: list[dict[str, object]]
) -> None:
    server = redis_server_factory("flags", policy="volatile-ttl", maxmemory="16mb")
    client = make_redis(server.url, role="flags")
    flags = KillSwitches(client, keys=keys, source="manual", audit=trail.append)
    flags.arm(actor="ops", reason="start")
    assert flags.check_order("momentum", "AAPL", "buy", 1, book=None).allowed

    server.kill()  # a crash: no goodbye, the socket refuses connections
    for side in ("buy", "sell"):
        decision = flags.check_order("momentum", "AAPL", side, 1, book=None)
        assert not decision.allowed
        assert decision.mode is KillMode.HALTED
        assert "unreachable" in decision.reason
    state = flags.state()
    assert (state.reachable, state.mode) == (False, KillMode.HALTED)
    assert flags.check_cancel("momentum", "AAPL").allowed
    with pytest.raises(DependencyUnavailable):
        flags.engage("global", "HALTED", actor="ops", reason="cannot be recorded")

    # Back, but empty: the halt that may have been engaged meanwhile is unknowable -> HALTED.
    server.start()
    decision = flags.check_order("momentum", "AAPL", "sell", 1, book=None)
    assert not decision.allowed
    assert "arms it" in decision.reason
    flags.arm(actor="ops", reason="flags server restarted; switches re-checked")
    assert flags.check_order("momentum", "AAPL", "buy", 1, book=None).allowed
    client.close()


@pytest.mark.parametrize(
    "junk_ttl",
    [3_600, 10 * 365 * 86_400],
    ids=["junk-expires-before-the-registry", "junk-outlives-the-registry"],
)
def test_filling_the_flags_tier_under_volatile_ttl_never_releases_a_kill_switch(
    redis_server_factory: ServerFactory,
    keys: Keys,
    trail: list[dict[str, object]],
    junk_ttl: int,
) -> None:
    server = redis_server_factory("flags", policy="volatile-ttl", maxmemory="4mb")
    client = make_redis(server.url, role="flags")
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-ttl"
    flags = KillSwitches(client, keys=keys, source="manual", audit=trail.append)
    flags.arm(actor="ops", reason="start")
    flags.engage("symbol", "HALTED", target="AAPL", actor="ops", reason="bad prints")
    agent = KillSwitches(client, keys=keys, source="agent", audit=trail.append)
    agent.engage("strategy", "REDUCING", target="momentum", actor="agent", reason="dd")
    assert flags.check_order("meanrev", "MSFT", "buy", 1, book=None).allowed

    # Fill with TTL'd junk (rate-limit counters, dedup keys, ... of other tenants): 5x maxmemory.
    value = b"x" * 1000
    for batch in range(40):
        pipe = client.pipeline(transaction=False)
        for i in range(500):
            pipe.set(f"junk:{batch}:{i}", value, ex=junk_ttl + i)
        pipe.execute()
    evicted = client.info("stats")["evicted_keys"]
    assert evicted > 10_000

    halted = flags.check_order("meanrev", "AAPL", "sell", 1, book=None)
    assert not halted.allowed
    assert halted.mode is KillMode.HALTED
    assert not flags.check_order("momentum", "MSFT", "buy", 1, book=None).allowed

    registry_survived = bool(client.exists(keys.kill_switches()))
    if junk_ttl < flags.kill_ttl_seconds:
        # volatile-ttl evicts the keys nearest to expiry first; the registry is the farthest.
        assert registry_survived
        # still REDUCING (the switch survived), not HALTED as a lost registry would read
        assert flags.check_order("momentum", "MSFT", "sell", 1, book=None).mode is KillMode.REDUCING
        assert flags.check_order("meanrev", "MSFT", "buy", 1, book=None).allowed
    else:
        # Other tenants' keys outlive it, so volatile-ttl takes the registry first: as a whole.
        assert not registry_survived
    if not registry_survived:
        # Everything halts until an operator re-arms.
        assert not flags.check_order("meanrev", "MSFT", "sell", 1, book=None).allowed
        assert flags.state().mode is KillMode.HALTED
    client.close()
