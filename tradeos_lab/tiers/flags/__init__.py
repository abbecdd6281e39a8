"""The flags tier: kill switches, rate limits, circuit breakers, dedup keys, worker heartbeats and
the intents waiting for an operator's approval.

A Redis with `volatile-ttl` eviction where every key carries a TTL. Kill switches have a module of
their own (`kill_switches`) because they must fail closed where everything else here may simply
be lost; `Flags` holds the rest of the tier.
"""

from __future__ import annotations

from typing import Final

import redis

from tradeos_lab.errors import ValidationError
from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.tiers.flags.approvals import ApprovalQueue, ParkedIntent
from tradeos_lab.tiers.flags.dedup import Dedup
from tradeos_lab.tiers.flags.kill_switches import (
    KILL_TTL_SECONDS,
    AuditSink,
    Decision,
    KillMode,
    KillScope,
    KillSource,
    KillState,
    KillSwitch,
    KillSwitches,
    PositionBook,
    decide,
    reduces_exposure,
)
from tradeos_lab.tiers.flags.limits import (
    BreakerState,
    BreakerStatus,
    CircuitBreaker,
    RateBudget,
    RateDecision,
    RateLimiter,
)
from tradeos_lab.tiers.flags.workers import Worker, Workers

REGISTRY_TTL_SECONDS: Final = 86_400

__all__ = [
    "KILL_TTL_SECONDS",
    "REGISTRY_TTL_SECONDS",
    "ApprovalQueue",
    "AuditSink",
    "BreakerState",
    "BreakerStatus",
    "CircuitBreaker",
    "Decision",
    "Dedup",
    "Flags",
    "KillMode",
    "KillScope",
    "KillSource",
    "KillState",
    "KillSwitch",
    "KillSwitches",
    "ParkedIntent",
    "PositionBook",
    "RateBudget",
    "RateDecision",
    "RateLimiter",
    "Worker",
    "Workers",
    "decide",
    "reduces_exposure",
]


class Flags:
    """The flags tier apart from the kill switches: `workers`, `dedup`, the `approvals` queue,
    and factories of rate limiters and circuit breakers, all over one injected client."""

    def __init__(
        self,
        redis: redis.Redis,
        *,
        keys: Keys,
        settings: Settings,
        kill_ttl_seconds: int = KILL_TTL_SECONDS,
        registry_ttl_seconds: int = REGISTRY_TTL_SECONDS,
    ) -> None:
        if registry_ttl_seconds < 60:
            raise ValidationError("registry_ttl_seconds must be >= 60")
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.workers = Workers(
            redis,
            keys=keys,
            heartbeat_ttl_seconds=settings.limits.heartbeat_ttl_seconds,
            registry_ttl_seconds=registry_ttl_seconds,
            kill_ttl_seconds=kill_ttl_seconds,
        )
        self.dedup = Dedup(redis, keys=keys)
        self.approvals = ApprovalQueue(redis, keys=keys)

    def rate_limiter(self, name: str, *, limit: int, window_seconds: float) -> RateLimiter:
        """An atomic sliding-window limiter, e.g. `("alpaca", limit=200, window_seconds=60)`."""
        return RateLimiter(self, name, limit=limit, window_seconds=window_seconds)

    def circuit_breaker(
        self,
        dependency: str,
        *,
        failure_threshold: int = 5,
        failure_window_seconds: float = 60.0,
        cooldown_seconds: float = 30.0,
        probe_timeout_seconds: float = 10.0,
    ) -> CircuitBreaker:
        return CircuitBreaker(
            self,
            dependency,
            failure_threshold=failure_threshold,
            failure_window_seconds=failure_window_seconds,
            cooldown_seconds=cooldown_seconds,
            probe_timeout_seconds=probe_timeout_seconds,
        )
