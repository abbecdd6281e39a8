"""Fault injection on the flags tier with its own redis-server: crash, restart, memory pressure."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tradeos_lab.errors import DependencyUnavailable
from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.stack.redis_server import RedisServerProcess
from tradeos_lab.tiers.flags import KillMode, KillSwitches

ServerFactory = Callable[..., RedisServerProcess]


def test_an_unreachable_flags_tier_reads_halted_for_every_order(
    redis_server_factory: ServerFactory, keys: Keys, settings_factory: Callable[..., Settings]
) -> None:
    server = redis_server_factory("flags", policy="volatile-ttl", maxmemory="16mb")
    client = make_redis(server.url, role="flags")
    flags = KillSwitches(client, keys=keys)
    flags.arm(actor="ops", reason="start")
    assert flags.check_order("momentum", "AAPL", reduces_exposure=False).allowed

    server.kill()  # a crash: no goodbye, the socket refuses connections
    for reduces in (False, True):
        decision = flags.check_order("momentum", "AAPL", reduces_exposure=reduces)
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
    decision = flags.check_order("momentum", "AAPL", reduces_exposure=True)
    assert not decision.allowed
    assert "arms it" in decision.reason
    flags.arm(actor="ops", reason="flags server restarted; switches re-checked")
    assert flags.check_order("momentum", "AAPL", reduces_exposure=False).allowed
    client.close()


@pytest.mark.parametrize(
    "junk_ttl",
    [3_600, 10 * 365 * 86_400],
    ids=["junk-expires-before-the-registry", "junk-outlives-the-registry"],
)
def test_filling_the_flags_tier_under_volatile_ttl_never_releases_a_kill_switch(
    redis_server_factory: ServerFactory,
    keys: Keys,
    settings_factory: Callable[..., Settings],
    junk_ttl: int,
) -> None:
    server = redis_server_factory("flags", policy="volatile-ttl", maxmemory="4mb")
    client = make_redis(server.url, role="flags")
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-ttl"
    flags = KillSwitches(client, keys=keys)
    flags.arm(actor="ops", reason="start")
    flags.engage("symbol", "HALTED", target="AAPL", actor="ops", reason="bad prints")
    flags.engage(
        "strategy", "REDUCING", target="momentum", source="agent", actor="agent", reason="dd"
    )
    assert flags.check_order("meanrev", "MSFT", reduces_exposure=False).allowed

    # Fill with TTL'd junk (rate-limit counters, dedup keys, ... of other tenants): 5x maxmemory.
    value = b"x" * 1000
    for batch in range(40):
        pipe = client.pipeline(transaction=False)
        for i in range(500):
            pipe.set(f"junk:{batch}:{i}", value, ex=junk_ttl + i)
        pipe.execute()
    evicted = client.info("stats")["evicted_keys"]
    assert evicted > 10_000

    halted = flags.check_order("meanrev", "AAPL", reduces_exposure=True)
    assert not halted.allowed
    assert halted.mode is KillMode.HALTED
    assert not flags.check_order("momentum", "MSFT", reduces_exposure=False).allowed

    registry_survived = bool(client.exists(keys.kill_switches()))
    if junk_ttl < flags.kill_ttl_seconds:
        # volatile-ttl evicts the keys nearest to expiry first; the registry is the farthest.
        assert registry_survived
        assert flags.check_order("momentum", "MSFT", reduces_exposure=True).allowed
        assert flags.check_order("meanrev", "MSFT", reduces_exposure=False).allowed
    else:
        # Other tenants' keys outlive it, so volatile-ttl takes the registry first: as a whole.
        assert not registry_survived
    if not registry_survived:
        # Everything halts until an operator re-arms.
        assert not flags.check_order("meanrev", "MSFT", reduces_exposure=True).allowed
        assert flags.state().mode is KillMode.HALTED
    client.close()
