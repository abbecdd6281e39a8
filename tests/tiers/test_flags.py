"""The flags tier on the machine's Redis: kill switches, rate limits, breakers, dedup, workers."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from tradeos_lab.errors import DependencyUnavailable, RateLimited, TradingHalted, ValidationError
from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.tiers.flags import (
    BreakerState,
    Flags,
    KillMode,
    KillScope,
    KillSource,
)


@pytest.fixture
def flags(
    shared_redis: redis.Redis, keys: Keys, settings_factory: Callable[..., Settings]
) -> Flags:
    return Flags(shared_redis, keys=keys, settings=settings_factory())


@pytest.fixture
def armed(flags: Flags) -> Flags:
    flags.arm(actor="ops:alice", reason="trading day start")
    return flags


def ops(**kw: object) -> dict[str, object]:
    return {"actor": "ops:alice", "reason": "test", **kw}


# ---- kill switches ----------------------------------------------------------------------------


def test_a_registry_that_was_never_armed_reads_halted(flags: Flags) -> None:
    decision = flags.check_order("momentum", "AAPL", reduces_exposure=True)
    assert not decision.allowed
    assert decision.mode is KillMode.HALTED
    assert "arms it" in decision.reason
    state = flags.state()
    assert (state.reachable, state.armed, state.mode) == (True, False, KillMode.HALTED)
    with pytest.raises(TradingHalted):
        decision.raise_if_denied()


def test_an_armed_registry_without_switches_lets_orders_through(armed: Flags) -> None:
    decision = armed.check_order("momentum", "AAPL", reduces_exposure=False)
    assert decision.allowed
    assert decision.mode is None
    decision.raise_if_denied()
    state = armed.state()
    assert (state.armed, state.mode, state.switches) == (True, None, ())
    assert state.armed_by is not None
    assert state.armed_by["actor"] == "ops:alice"


def test_global_halt_blocks_every_new_order_but_never_cancels(armed: Flags) -> None:
    record = armed.engage("global", "HALTED", **ops(reason="market halt"))
    assert record["event"] == "kill_switch.engaged"
    for reduces in (False, True):
        decision = armed.check_order("momentum", "AAPL", reduces_exposure=reduces)
        assert not decision.allowed
        assert decision.mode is KillMode.HALTED
        assert "market halt" in decision.reason
    assert armed.check_cancel("momentum", "AAPL").allowed
    assert armed.state().mode is KillMode.HALTED


def test_reducing_mode_lets_only_exposure_reducing_orders_through(armed: Flags) -> None:
    armed.engage("global", KillMode.REDUCING, **ops())
    assert not armed.check_order("momentum", "AAPL", reduces_exposure=False).allowed
    decision = armed.check_order("momentum", "AAPL", reduces_exposure=True)
    assert decision.allowed
    assert decision.mode is KillMode.REDUCING
    assert armed.state().mode is KillMode.REDUCING


def test_strategy_and_symbol_switches_apply_only_to_their_target(armed: Flags) -> None:
    armed.engage("strategy", "HALTED", target="momentum", **ops())
    armed.engage(KillScope.SYMBOL, "REDUCING", target="TSLA", **ops())
    assert not armed.check_order("momentum", "AAPL", reduces_exposure=False).allowed
    assert armed.check_order("meanrev", "AAPL", reduces_exposure=False).allowed
    assert not armed.check_order("meanrev", "TSLA", reduces_exposure=False).allowed
    assert armed.check_order("meanrev", "TSLA", reduces_exposure=True).allowed
    assert armed.state().mode is None  # no global switch
    assert len(armed.state().switches) == 2


def test_halted_beats_reducing_whatever_the_scope(armed: Flags) -> None:
    armed.engage("global", "REDUCING", **ops())
    armed.engage("symbol", "HALTED", target="AAPL", source="agent", **ops(actor="agent"))
    decision = armed.check_order("momentum", "AAPL", reduces_exposure=True)
    assert not decision.allowed
    assert decision.mode is KillMode.HALTED


def test_the_agent_can_neither_replace_nor_clear_a_manual_halt(armed: Flags) -> None:
    armed.engage("global", "HALTED", **ops())
    armed.engage("global", "REDUCING", source=KillSource.AGENT, **ops(actor="agent"))
    armed.clear("global", source="agent", **ops(actor="agent"))
    decision = armed.check_order("momentum", "AAPL", reduces_exposure=True)
    assert not decision.allowed
    assert decision.mode is KillMode.HALTED


def test_a_manual_halt_cannot_expire_and_lifts_only_by_an_audited_clear(armed: Flags) -> None:
    with pytest.raises(ValidationError):
        armed.engage("global", "HALTED", ttl_seconds=60, **ops())
    armed.engage("symbol", "HALTED", target="AAPL", **ops(reason="bad prints"))
    for actor, reason in (("", "x"), ("ops", ""), ("ops", "   "), (None, "x")):
        with pytest.raises(ValidationError):
            armed.clear("symbol", target="AAPL", actor=actor, reason=reason)  # type: ignore[arg-type]
    assert not armed.check_order("momentum", "AAPL", reduces_exposure=False).allowed

    record = armed.clear("symbol", target="AAPL", actor="ops:bob", reason="prints corrected")
    assert record["event"] == "kill_switch.cleared"
    assert (record["actor"], record["reason"]) == ("ops:bob", "prints corrected")
    assert record["cleared"]["mode"] == "HALTED"
    assert record["cleared"]["reason"] == "bad prints"
    assert record["at"].endswith("+00:00")
    assert armed.check_order("momentum", "AAPL", reduces_exposure=False).allowed
    again = armed.clear("symbol", target="AAPL", actor="ops:bob", reason="twice")
    assert again["cleared"] is None


def test_an_agent_switch_may_expire_by_its_own_ttl(armed: Flags, keys: Keys) -> None:
    armed.engage("strategy", "HALTED", target="momentum", source="agent", ttl_seconds=0.3, **ops())
    assert not armed.check_order("momentum", "AAPL", reduces_exposure=False).allowed
    time.sleep(0.4)
    assert armed.check_order("momentum", "AAPL", reduces_exposure=False).allowed
    assert armed.refresh() is True
    assert armed.redis.hlen(keys.kill_switches()) == 1  # only the sentinel is left


def test_a_lost_registry_reads_halted_until_armed_again(armed: Flags, keys: Keys) -> None:
    armed.engage("symbol", "HALTED", target="AAPL", **ops())
    armed.redis.delete(keys.kill_switches())  # what eviction or a flush would do
    for symbol in ("AAPL", "MSFT"):
        decision = armed.check_order("momentum", symbol, reduces_exposure=True)
        assert not decision.allowed
        assert decision.mode is KillMode.HALTED
    # A switch written into the lost registry does not make it trustworthy again.
    armed.engage("symbol", "REDUCING", target="TSLA", **ops())
    assert not armed.check_order("momentum", "MSFT", reduces_exposure=False).allowed
    assert armed.state().mode is KillMode.HALTED
    assert armed.refresh() is False

    record = armed.arm(actor="ops:alice", reason="registry lost; switches reviewed")
    assert record["was_armed"] is False
    assert armed.check_order("momentum", "MSFT", reduces_exposure=False).allowed
    assert not armed.check_order("momentum", "TSLA", reduces_exposure=False).allowed


def test_an_expired_registry_reads_halted(armed: Flags, keys: Keys) -> None:
    armed.redis.pexpire(keys.kill_switches(), 50)
    time.sleep(0.1)
    assert not armed.check_order("momentum", "AAPL", reduces_exposure=True).allowed
    assert armed.refresh() is False


@pytest.mark.parametrize(
    "stored",
    [b"not json", b'{"mode": "PAUSED"}', b"[]", b'{"scope": "global"}'],
)
def test_a_corrupt_or_unknown_switch_reads_halted(armed: Flags, keys: Keys, stored: bytes) -> None:
    armed.redis.hset(keys.kill_switches(), "global:*:manual", stored)
    decision = armed.check_order("momentum", "AAPL", reduces_exposure=True)
    assert not decision.allowed
    assert decision.mode is KillMode.HALTED
    assert armed.state().mode is KillMode.HALTED


def test_the_registry_ttl_is_long_and_refreshed_by_writes_and_heartbeats(
    armed: Flags, keys: Keys
) -> None:
    key = keys.kill_switches()
    assert armed.redis.ttl(key) > 29 * 86_400
    armed.redis.expire(key, 1000)
    armed.heartbeat("execution", "w1")
    assert armed.redis.ttl(key) > 29 * 86_400
    armed.redis.expire(key, 1000)
    armed.engage("global", "REDUCING", **ops())
    assert armed.redis.ttl(key) > 29 * 86_400


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scope": "global", "mode": "PAUSED"},
        {"scope": "global", "mode": "halted"},
        {"scope": "account", "mode": "HALTED", "target": "x"},
        {"scope": "global", "mode": "HALTED", "source": "robot"},
        {"scope": "global", "mode": "HALTED", "target": "AAPL"},
        {"scope": "symbol", "mode": "HALTED"},
        {"scope": "symbol", "mode": "HALTED", "target": "aapl"},
        {"scope": "strategy", "mode": "HALTED", "target": "has:colon"},
        {"scope": "global", "mode": "HALTED", "source": "agent", "ttl_seconds": -1},
        {"scope": "global", "mode": "HALTED", "source": "agent", "ttl_seconds": float("nan")},
        {"scope": "global", "mode": None},
    ],
)
def test_bad_kill_switch_input_raises_and_writes_nothing(
    armed: Flags, keys: Keys, kwargs: dict[str, object]
) -> None:
    before = armed.redis.hgetall(keys.kill_switches())
    scope, mode = kwargs.pop("scope"), kwargs.pop("mode")
    with pytest.raises(ValidationError):
        armed.engage(scope, mode, actor="ops", reason="x", **kwargs)  # type: ignore[arg-type]
    assert armed.redis.hgetall(keys.kill_switches()) == before


def test_bad_order_checks_raise_instead_of_answering(armed: Flags) -> None:
    with pytest.raises(ValidationError):
        armed.check_order("momentum", "not a ticker", reduces_exposure=False)
    with pytest.raises(ValidationError):
        armed.check_order("", "AAPL", reduces_exposure=False)
    with pytest.raises(ValidationError):
        armed.check_order("momentum", "AAPL", reduces_exposure="yes")  # type: ignore[arg-type]


# ---- rate limiter, circuit breaker, dedup ----------------------------------------------------


def test_rate_limiter_admits_at_most_the_limit_in_any_window(flags: Flags, keys: Keys) -> None:
    limiter = flags.rate_limiter("alpaca", limit=200, window_seconds=60)
    t0 = 1_700_000_000_000
    results = [limiter.acquire(now_ms=t0 + i * 100) for i in range(250)]
    assert sum(r.allowed for r in results) == 200
    first_denied = results[200]
    assert not first_denied.allowed
    assert first_denied.remaining == 0
    # the oldest admitted request (t0) leaves the window at t0 + 60 s
    assert first_denied.retry_after_seconds == pytest.approx((t0 + 60_000 - (t0 + 20_000)) / 1000)
    assert limiter.acquire(now_ms=t0 + 60_000).allowed
    assert 0 < flags.redis.pttl(keys.rate_limit("alpaca")) <= 60_000


def test_rate_limiter_require_raises_rate_limited(flags: Flags) -> None:
    limiter = flags.rate_limiter("tiny", limit=2, window_seconds=30)
    limiter.require()
    limiter.require()
    with pytest.raises(RateLimited, match="retry in"):
        limiter.require()
    with pytest.raises(ValidationError):
        limiter.acquire(cost=3)


def test_circuit_breaker_opens_probes_and_closes(flags: Flags, keys: Keys) -> None:
    breaker = flags.circuit_breaker(
        "alpaca", failure_threshold=3, cooldown_seconds=10, probe_timeout_seconds=5
    )
    t = 1_700_000_000_000
    assert breaker.allow(now_ms=t)
    for i in range(3):
        status = breaker.record_failure(now_ms=t + i)
    assert status.state is BreakerState.OPEN
    assert flags.redis.pttl(keys.circuit("alpaca")) > 0
    assert not breaker.allow(now_ms=t + 5_000)
    assert breaker.allow(now_ms=t + 10_002)  # the probe
    assert breaker.status(now_ms=t + 10_003).state is BreakerState.HALF_OPEN
    assert not breaker.allow(now_ms=t + 10_004)  # one probe at a time
    assert breaker.record_success(now_ms=t + 10_100).state is BreakerState.CLOSED
    assert not flags.redis.exists(keys.circuit("alpaca"))  # closed and clean = no key
    assert breaker.allow(now_ms=t + 10_200)


def test_circuit_breaker_require_raises_when_open(flags: Flags) -> None:
    breaker = flags.circuit_breaker("coinbase", failure_threshold=1, cooldown_seconds=60)
    breaker.require()
    breaker.record_failure()
    with pytest.raises(DependencyUnavailable, match="open"):
        breaker.require()


def test_dedup_keys_claim_once_with_a_ttl(flags: Flags, keys: Keys) -> None:
    assert flags.claim_once("order:42", ttl_seconds=30) is True
    assert flags.claim_once("order:42", ttl_seconds=30) is False
    assert 0 < flags.redis.ttl(keys.dedup("order:42")) <= 30
    assert flags.release_claim("order:42") is True
    assert flags.claim_once("order:42", ttl_seconds=30) is True
    for bad in ("", "has space", "x" * 257):
        with pytest.raises(ValidationError):
            flags.claim_once(bad, ttl_seconds=30)
    with pytest.raises(ValidationError):
        flags.claim_once("ok", ttl_seconds=0)


# ---- worker registry --------------------------------------------------------------------------


def test_worker_registry_finds_live_and_stale_workers_by_score(flags: Flags, keys: Keys) -> None:
    now = time.time()
    flags.heartbeat("ingestion", "a", {"pid": 11, "host": "box"}, now=now - 100)
    flags.heartbeat("execution", "b", now=now - 1)
    flags.heartbeat("signal-engine", "c", now=now)
    assert flags.redis.type(keys.workers()) == b"zset"

    live = flags.live_workers(max_age_seconds=15, now=now)
    assert {(w.service, w.instance) for w in live} == {("execution", "b"), ("signal-engine", "c")}
    stale = flags.stale_workers(max_age_seconds=15, now=now)
    assert [(w.service, w.instance) for w in stale] == [("ingestion", "a")]
    assert stale[0].info == {"pid": "11", "host": "box"}
    assert stale[0].age_seconds == pytest.approx(100, abs=0.01)

    reaped = flags.reap_stale(max_age_seconds=15, now=now)
    assert [w.instance for w in reaped] == ["a"]
    assert flags.stale_workers(max_age_seconds=15, now=now) == []
    assert not flags.redis.exists(keys.heartbeat("ingestion", "a"))
    assert flags.deregister("execution", "b") is True
    assert [w.instance for w in flags.live_workers(max_age_seconds=15, now=now)] == ["c"]


def test_heartbeats_use_the_server_clock_and_the_profile_ttl(flags: Flags) -> None:
    seen = flags.heartbeat("tca", "1")
    assert abs(seen - time.time()) < 5
    assert [w.service for w in flags.live_workers()] == ["tca"]
    assert flags.stale_workers() == []


@pytest.mark.parametrize(
    "beat",
    [("has:colon", "1", None), ("svc", "", None), ("svc", "1", {"k": True}), ("svc", "1", {"": 1})],
)
def test_bad_heartbeats_raise_and_write_nothing(
    flags: Flags, shared_redis: redis.Redis, namespace: str, beat: tuple[str, str, object]
) -> None:
    service, instance, info = beat
    with pytest.raises(ValidationError):
        flags.heartbeat(service, instance, info)  # type: ignore[arg-type]
    assert list(shared_redis.scan_iter(match=f"{namespace}:*")) == []


def test_every_flags_key_carries_a_ttl(
    armed: Flags, shared_redis: redis.Redis, namespace: str
) -> None:
    armed.engage("global", "REDUCING", **ops())
    armed.engage("symbol", "HALTED", target="AAPL", source="agent", ttl_seconds=600, **ops())
    armed.rate_limiter("alpaca", limit=5, window_seconds=60).acquire()
    breaker = armed.circuit_breaker("alpaca", failure_threshold=2)
    breaker.record_failure()
    armed.circuit_breaker("coinbase", failure_threshold=1).record_failure()
    armed.claim_once("fill:1", ttl_seconds=60)
    armed.heartbeat("execution", "w1", {"pid": 1})
    found = list(shared_redis.scan_iter(match=f"{namespace}:*"))
    assert len(found) == 7
    for key in found:
        assert shared_redis.pttl(key) > 0, key


def test_registry_queries_never_scan(
    redis_server_factory: Callable[..., object],
    keys: Keys,
    settings_factory: Callable[..., Settings],
) -> None:
    from tradeos_lab.stack.clients import make_redis

    server = redis_server_factory("flags", policy="volatile-ttl", maxmemory="16mb")
    client = make_redis(server.url, role="flags")  # type: ignore[attr-defined]
    flags = Flags(client, keys=keys, settings=settings_factory())
    for i in range(50):
        flags.heartbeat("svc", f"w{i}", now=1000.0 + i)
    client.config_resetstat()
    assert len(flags.stale_workers(max_age_seconds=10, now=1045.0)) == 35
    assert len(flags.live_workers(max_age_seconds=10, now=1045.0)) == 15
    flags.reap_stale(max_age_seconds=10, now=1045.0)
    stats = client.info("commandstats")
    assert "cmdstat_scan" not in stats
    assert "cmdstat_keys" not in stats
    assert stats["cmdstat_zrangebyscore"]["calls"] == 3
    client.close()


def test_rate_limit_window_boundary_is_exact(flags: Flags) -> None:
    limiter = flags.rate_limiter("edge", limit=1, window_seconds=60)
    t = 1_700_000_000_000
    assert limiter.acquire(now_ms=t).allowed
    denied = limiter.acquire(now_ms=t + 59_999)
    assert (denied.allowed, denied.retry_after_seconds) == (False, 0.001)
    assert limiter.acquire(now_ms=t + 60_000).allowed


def test_circuit_breaker_boundaries_are_exact(flags: Flags) -> None:
    breaker = flags.circuit_breaker(
        "edge",
        failure_threshold=2,
        failure_window_seconds=10,
        cooldown_seconds=30,
        probe_timeout_seconds=5,
    )
    t = 1_700_000_000_000
    breaker.record_failure(now_ms=t)
    assert breaker.record_failure(now_ms=t + 10_000).failures == 1  # window passed: a new count
    opened = breaker.record_failure(now_ms=t + 19_999)
    assert (opened.state, opened.opened_at_ms) == (BreakerState.OPEN, t + 19_999)
    assert not breaker.allow(now_ms=opened.opened_at_ms + 29_999)
    assert breaker.allow(now_ms=opened.opened_at_ms + 30_000)  # the probe
    probe_sent = opened.opened_at_ms + 30_000
    assert not breaker.allow(now_ms=probe_sent + 4_999)
    assert breaker.allow(now_ms=probe_sent + 5_000)  # the probe never reported: a new one
    reopened = breaker.record_failure(now_ms=probe_sent + 5_001)
    assert (reopened.state, reopened.opened_at_ms) == (BreakerState.OPEN, probe_sent + 5_001)
