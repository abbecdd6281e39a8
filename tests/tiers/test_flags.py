"""The flags tier on the machine's Redis: rate limits, breakers, dedup keys, workers."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from tradeos_lab.errors import DependencyUnavailable, RateLimited, ValidationError
from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.stack.redis_server import RedisServerProcess
from tradeos_lab.tiers.flags import BreakerState, Flags, KillSwitches, RateBudget


@pytest.fixture
def flags(
    shared_redis: redis.Redis, keys: Keys, settings_factory: Callable[..., Settings]
) -> Flags:
    return Flags(shared_redis, keys=keys, settings=settings_factory())


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


def test_rate_limit_budget_reads_the_window_without_taking_a_slot(flags: Flags) -> None:
    limiter = flags.rate_limiter("broker", limit=3, window_seconds=10)
    t0 = 1_700_000_000_000
    assert limiter.budget(now_ms=t0) == RateBudget(3, 0, 3, 0.0)
    limiter.acquire(now_ms=t0)
    limiter.acquire(now_ms=t0 + 4_000)
    for _ in range(5):  # reading never changes what is left
        assert limiter.budget(now_ms=t0 + 5_000) == RateBudget(3, 2, 1, 5.0)
    # the first request leaves the window at t0 + 10 s; the second one 4 s later
    assert limiter.budget(now_ms=t0 + 10_000) == RateBudget(3, 1, 2, 4.0)
    assert limiter.acquire(now_ms=t0 + 10_000).remaining == 1


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
    assert flags.dedup.claim_once("order:42", ttl_seconds=30) is True
    assert flags.dedup.claim_once("order:42", ttl_seconds=30) is False
    assert 0 < flags.redis.ttl(keys.dedup("order:42")) <= 30
    assert flags.dedup.release_claim("order:42") is True
    assert flags.dedup.claim_once("order:42", ttl_seconds=30) is True
    for bad in ("", "has space", "x" * 257):
        with pytest.raises(ValidationError):
            flags.dedup.claim_once(bad, ttl_seconds=30)
    with pytest.raises(ValidationError):
        flags.dedup.claim_once("ok", ttl_seconds=0)


# ---- worker registry --------------------------------------------------------------------------


def test_worker_registry_finds_live_and_stale_workers_by_score(flags: Flags, keys: Keys) -> None:
    now = time.time()
    flags.workers.heartbeat("ingestion", "a", {"pid": 11, "host": "box"}, now=now - 100)
    flags.workers.heartbeat("execution", "b", now=now - 1)
    flags.workers.heartbeat("signal-engine", "c", now=now)
    assert flags.redis.type(keys.workers()) == b"zset"

    live = flags.workers.live_workers(max_age_seconds=15, now=now)
    assert {(w.service, w.instance) for w in live} == {("execution", "b"), ("signal-engine", "c")}
    stale = flags.workers.stale_workers(max_age_seconds=15, now=now)
    assert [(w.service, w.instance) for w in stale] == [("ingestion", "a")]
    assert stale[0].info == {"pid": "11", "host": "box"}
    assert stale[0].age_seconds == pytest.approx(100, abs=0.01)

    reaped = flags.workers.reap_stale(max_age_seconds=15, now=now)
    assert [w.instance for w in reaped] == ["a"]
    assert flags.workers.stale_workers(max_age_seconds=15, now=now) == []
    assert not flags.redis.exists(keys.heartbeat("ingestion", "a"))
    assert flags.workers.deregister("execution", "b") is True
    assert [w.instance for w in flags.workers.live_workers(max_age_seconds=15, now=now)] == ["c"]


def test_heartbeats_use_the_server_clock_and_the_profile_ttl(flags: Flags) -> None:
    seen = flags.workers.heartbeat("tca", "1")
    assert abs(seen - time.time()) < 5
    assert [w.service for w in flags.workers.live_workers()] == ["tca"]
    assert flags.workers.stale_workers() == []


@pytest.mark.parametrize(
    "beat",
    [("has space", "1", None), ("svc", "", None), ("svc", "1", {"k": True}), ("svc", "1", {"": 1})],
)
def test_bad_heartbeats_raise_and_write_nothing(
    flags: Flags, shared_redis: redis.Redis, namespace: str, beat: tuple[str, str, object]
) -> None:
    service, instance, info = beat
    with pytest.raises(ValidationError):
        flags.workers.heartbeat(service, instance, info)  # type: ignore[arg-type]
    assert list(shared_redis.scan_iter(match=f"{namespace}:*")) == []


def test_every_flags_key_carries_a_ttl(
    flags: Flags, shared_redis: redis.Redis, namespace: str, keys: Keys
) -> None:
    operator = KillSwitches(shared_redis, keys=keys, source="manual", audit=print)
    operator.arm(actor="ops:alice", reason="trading day start")
    operator.engage("global", "REDUCING", actor="ops:alice", reason="test")
    agent = KillSwitches(shared_redis, keys=keys, source="agent", audit=print)
    agent.engage("symbol", "HALTED", target="AAPL", ttl_seconds=600, actor="a", reason="t")
    flags.rate_limiter("alpaca", limit=5, window_seconds=60).acquire()
    breaker = flags.circuit_breaker("alpaca", failure_threshold=2)
    breaker.record_failure()
    flags.circuit_breaker("coinbase", failure_threshold=1).record_failure()
    flags.dedup.claim_once("fill:1", ttl_seconds=60)
    flags.workers.heartbeat("execution", "w1", {"pid": 1})
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
        flags.workers.heartbeat("svc", f"w{i}", now=1000.0 + i)
    client.config_resetstat()
    assert len(flags.workers.stale_workers(max_age_seconds=10, now=1045.0)) == 35
    assert len(flags.workers.live_workers(max_age_seconds=10, now=1045.0)) == 15
    flags.workers.reap_stale(max_age_seconds=10, now=1045.0)
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


# ---- several flags in one round trip ----------------------------------------------------------


def test_a_breaker_admitted_beside_other_reads_answers_as_admit_even_after_a_script_flush(
    redis_server_factory: Callable[..., RedisServerProcess],
    keys: Keys,
    settings_factory: Callable[..., Settings],
) -> None:
    client = make_redis(redis_server_factory("flags").url, role="flags")
    flags = Flags(client, keys=keys, settings=settings_factory())
    breaker = flags.circuit_breaker("broker", failure_threshold=1, cooldown_seconds=60)
    pipe = client.pipeline(transaction=False)
    admitted = breaker.queue_admit(pipe)
    assert admitted(pipe.execute(raise_on_error=False)[0]).allowed
    breaker.record_failure()
    client.script_flush()  # a restarted server: the pipeline's EVALSHA answers NOSCRIPT
    pipe = client.pipeline(transaction=False)
    pipe.ping()
    admitted = breaker.queue_admit(pipe)
    status = admitted(pipe.execute(raise_on_error=False)[1])
    assert (status.state, status.allowed) == (BreakerState.OPEN, False)
    client.close()
