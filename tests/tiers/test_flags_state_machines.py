"""Property tests: the Lua rate limiter and circuit breaker behave like small pure-Python models.

Each hypothesis example drives the real scripts on the machine's Redis with an injected clock and
compares every answer with the model. Durations are >= 20 s so that the keys' real-time TTLs (which
follow the wall clock, not the injected one) never expire during an example.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tradeos_lab.errors import ValidationError
from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.tiers.flags import BreakerState, CircuitBreaker, Flags, RateLimiter

T0 = 1_700_000_000_000
# Coarse steps plus a 1 ms nudge, so that "exactly at the boundary" happens often.
STEPS = st.sampled_from([0, 1, 10_000, 20_000, 30_000, 40_000, 50_000, 60_000])
DURATIONS = st.sampled_from([20_000, 30_000, 40_000])
RUN = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture
def flags(
    shared_redis: redis.Redis, keys: Keys, settings_factory: Callable[..., Settings]
) -> Flags:
    return Flags(shared_redis, keys=keys, settings=settings_factory())


# ---- rate limiter ------------------------------------------------------------------------------


class RateModel:
    """Sliding-window log: a request at t counts while now - window < t."""

    def __init__(self, limit: int, window_ms: int) -> None:
        self.limit, self.window_ms = limit, window_ms
        self.admitted: list[int] = []

    def acquire(self, now: int, cost: int) -> tuple[bool, int, int]:
        self.admitted = [t for t in self.admitted if t > now - self.window_ms]
        count = len(self.admitted)
        if count + cost <= self.limit:
            self.admitted += [now] * cost
            return True, self.limit - count - cost, 0
        oldest_needed = sorted(self.admitted)[count + cost - self.limit - 1]
        return False, self.limit - count, oldest_needed + self.window_ms - now


def test_rate_limiter_matches_the_sliding_window_model(flags: Flags) -> None:
    class RateLimiterMachine(RuleBasedStateMachine):
        limiter: RateLimiter
        model: RateModel

        def __init__(self) -> None:
            super().__init__()
            self.now = T0

        @initialize(limit=st.integers(1, 6), window_ms=DURATIONS)
        def start(self, limit: int, window_ms: int) -> None:
            name = f"rl-{uuid.uuid4().hex[:12]}"
            self.limiter = flags.rate_limiter(name, limit=limit, window_seconds=window_ms / 1000)
            self.model = RateModel(limit, window_ms)

        @rule(dt=STEPS)
        def advance(self, dt: int) -> None:
            self.now += dt

        @rule(cost=st.integers(1, 7))
        def acquire(self, cost: int) -> None:
            if cost > self.model.limit:
                try:
                    self.limiter.acquire(cost, now_ms=self.now)
                except ValidationError:
                    return
                raise AssertionError("a cost above the limit must be refused")
            got = self.limiter.acquire(cost, now_ms=self.now)
            allowed, remaining, retry_ms = self.model.acquire(self.now, cost)
            assert (got.allowed, got.remaining) == (allowed, remaining)
            assert round(got.retry_after_seconds * 1000) == retry_ms

        @invariant()
        def never_more_than_the_limit_in_any_window(self) -> None:
            if not hasattr(self, "model"):
                return
            live = [t for t in self.model.admitted if t > self.now - self.model.window_ms]
            assert len(live) <= self.model.limit

        @invariant()
        def redis_holds_what_the_model_holds(self) -> None:
            if not hasattr(self, "model"):
                return
            assert flags.redis.zcard(self.limiter.key) == len(self.model.admitted)

    run_state_machine_as_test(RateLimiterMachine, settings=RUN)


# ---- circuit breaker ---------------------------------------------------------------------------


@dataclass
class BreakerModel:
    threshold: int
    window: int
    cooldown: int
    probe: int
    state: str = "closed"
    failures: int = 0
    window_start: int = 0
    opened: int = 0
    probe_until: int = 0

    def allow(self, now: int) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open":
            if now >= self.opened + self.cooldown:
                self.state, self.probe_until = "half_open", now + self.probe
                return True
            return False
        if now >= self.probe_until:  # the previous probe never reported back
            self.probe_until = now + self.probe
            return True
        return False

    def success(self) -> None:
        if self.state == "half_open" or (self.state == "closed" and self.failures):
            self.state, self.failures, self.window_start = "closed", 0, 0
            self.opened = self.probe_until = 0

    def failure(self, now: int) -> None:
        if self.state == "closed":
            if self.failures == 0 or now - self.window_start >= self.window:
                self.failures, self.window_start = 1, now
            else:
                self.failures += 1
            if self.failures >= self.threshold:
                self.state, self.opened = "open", now
        elif self.state == "half_open":
            self.state, self.opened, self.probe_until = "open", now, 0

    def snapshot(self) -> tuple[str, int, int, int]:
        return self.state, self.failures, self.opened, self.probe_until


def test_circuit_breaker_matches_the_state_model(flags: Flags) -> None:
    class BreakerMachine(RuleBasedStateMachine):
        breaker: CircuitBreaker
        model: BreakerModel

        def __init__(self) -> None:
            super().__init__()
            self.now = T0

        @initialize(
            threshold=st.integers(1, 4), window=DURATIONS, cooldown=DURATIONS, probe=DURATIONS
        )
        def start(self, threshold: int, window: int, cooldown: int, probe: int) -> None:
            self.breaker = flags.circuit_breaker(
                f"dep-{uuid.uuid4().hex[:12]}",
                failure_threshold=threshold,
                failure_window_seconds=window / 1000,
                cooldown_seconds=cooldown / 1000,
                probe_timeout_seconds=probe / 1000,
            )
            self.model = BreakerModel(threshold, window, cooldown, probe)

        def check(self, got: object) -> None:
            status = self.breaker.status(now_ms=self.now)
            assert (
                status.state.value,
                status.failures,
                status.opened_at_ms,
                status.probe_until_ms,
            ) == (self.model.snapshot()), got

        @rule(dt=STEPS)
        def advance(self, dt: int) -> None:
            self.now += dt

        @rule()
        def allow(self) -> None:
            got = self.breaker.allow(now_ms=self.now)
            assert got == self.model.allow(self.now)
            self.check(got)

        @rule()
        def success(self) -> None:
            got = self.breaker.record_success(now_ms=self.now)
            self.model.success()
            assert got.state.value == self.model.state
            self.check(got)

        @rule()
        def failure(self) -> None:
            got = self.breaker.record_failure(now_ms=self.now)
            self.model.failure(self.now)
            assert got.state.value == self.model.state
            self.check(got)

        @precondition(lambda self: hasattr(self, "model"))
        @invariant()
        def closed_means_below_the_threshold(self) -> None:
            if self.model.state == BreakerState.CLOSED:
                assert self.model.failures < self.model.threshold
                assert self.model.opened == self.model.probe_until == 0

        @precondition(lambda self: hasattr(self, "model"))
        @invariant()
        def a_clean_closed_breaker_has_no_key(self) -> None:
            clean = self.model.state == "closed" and self.model.failures == 0
            assert bool(flags.redis.exists(self.breaker.key)) != clean
            if not clean:
                assert flags.redis.pttl(self.breaker.key) > 0

    run_state_machine_as_test(BreakerMachine, settings=RUN)
