"""Rate limits and circuit breakers shared by every process, each one Lua call on the flags tier.

A rate limit is a sliding-window log (one sorted-set member per admitted request); a circuit
breaker is a small hash whose transitions are atomic. Both keys carry a TTL, as every flags key
must; a lost breaker key reads closed (the dependency is simply tried again), which is safe.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import redis

from tradeos_lab.errors import CircuitOpen, DependencyUnavailable, RateLimited, ValidationError
from tradeos_lab.symbols import canonical_name
from tradeos_lab.tiers.flags.plumbing import (
    NOW_MS,
    call_script,
    milliseconds,
    positive_int,
    text,
)

if TYPE_CHECKING:
    from redis.client import Pipeline

    from tradeos_lab.tiers.flags import Flags


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    remaining: int
    retry_after_seconds: float


@dataclass(frozen=True)
class RateBudget:
    """What is left of a rate limit's window right now, read without taking a slot."""

    limit: int
    used: int
    remaining: int
    resets_in_seconds: float


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerStatus:
    state: BreakerState
    failures: int
    opened_at_ms: int
    probe_until_ms: int
    allowed: bool = False


# Sliding-window log: one sorted-set member per admitted request, scored by its time in ms.
# ARGV: now ms (-1 = server clock), limit, window ms, cost, unique token.
_RATE = (
    NOW_MS
    + """
local limit, window, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - window))
local count = redis.call('ZCARD', KEYS[1])
if count + cost <= limit then
  for i = 1, cost do
    redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[5] .. ':' .. i)
  end
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, limit - count - cost, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], count + cost - limit - 1, count + cost - limit - 1,
  'WITHSCORES')
return {0, limit - count, tonumber(oldest[2]) + window - now}
"""
)

# The window as `_RATE` would see it, without admitting anything: requests still inside it and
# when the oldest of them leaves. ARGV: now ms (-1 = server clock), window ms.
_PEEK = (
    NOW_MS
    + """
local since = '(' .. string.format('%.0f', now - tonumber(ARGV[2]))
local used = redis.call('ZCOUNT', KEYS[1], since, '+inf')
local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if #oldest == 0 then return {used, 0} end
return {used, tonumber(oldest[2]) + tonumber(ARGV[2]) - now}
"""
)

# Circuit breaker. A missing key is "closed, no failures", so closed+0 deletes the key.
# ARGV: now ms, op (allow|success|failure|status), threshold, window ms, cooldown ms,
# probe timeout ms, ttl ms.
_BREAKER = (
    NOW_MS
    + """
local op, threshold = ARGV[2], tonumber(ARGV[3])
local window, cooldown, probe, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]),
  tonumber(ARGV[7])
local h = redis.call('HMGET', KEYS[1], 'state', 'failures', 'window_start', 'opened_at',
  'probe_until')
local state = h[1] or 'closed'
local failures = tonumber(h[2]) or 0
local wstart = tonumber(h[3]) or 0
local opened = tonumber(h[4]) or 0
local probe_until = tonumber(h[5]) or 0
local allowed, changed = 0, false
if op == 'allow' then
  if state == 'closed' then
    allowed = 1
  elseif state == 'open' then
    if now >= opened + cooldown then
      state = 'half_open'; probe_until = now + probe; allowed = 1; changed = true
    end
  elseif now >= probe_until then
    probe_until = now + probe; allowed = 1; changed = true
  end
elseif op == 'success' then
  if state == 'half_open' or (state == 'closed' and failures > 0) then
    state = 'closed'; failures = 0; wstart = 0; opened = 0; probe_until = 0; changed = true
  end
elseif op == 'failure' then
  if state == 'closed' then
    if failures == 0 or now - wstart >= window then
      failures = 1; wstart = now
    else
      failures = failures + 1
    end
    if failures >= threshold then state = 'open'; opened = now end
    changed = true
  elseif state == 'half_open' then
    state = 'open'; opened = now; probe_until = 0; changed = true
  end
end
if changed then
  if state == 'closed' and failures == 0 then
    redis.call('DEL', KEYS[1])
  else
    redis.call('HSET', KEYS[1], 'state', state, 'failures', failures,
      'window_start', string.format('%.0f', wstart), 'opened_at', string.format('%.0f', opened),
      'probe_until', string.format('%.0f', probe_until))
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
end
return {state, failures, opened, probe_until, allowed}
"""
)


class RateLimiter:
    """Atomic sliding window: at most `limit` requests in any `window_seconds` (Lua, one call)."""

    def __init__(self, flags: Flags, name: str, *, limit: int, window_seconds: float) -> None:
        self.flags = flags
        self.name = canonical_name(name, "rate limit")
        self.limit = positive_int("limit", limit)
        if isinstance(window_seconds, bool) or not isinstance(window_seconds, int | float):
            raise ValidationError("window_seconds must be a number")
        if not math.isfinite(window_seconds) or window_seconds < 0.001:
            raise ValidationError(f"window_seconds must be >= 0.001, got {window_seconds}")
        self.window_ms = round(window_seconds * 1000)
        self.key = flags.keys.rate_limit(self.name)
        self._script = flags.redis.register_script(_RATE)
        self._peek = flags.redis.register_script(_PEEK)

    def acquire(self, cost: int = 1, *, now_ms: int | None = None) -> RateDecision:
        """Take `cost` slots if they fit in the window; never blocks."""
        positive_int("cost", cost)
        if cost > self.limit:
            raise ValidationError(f"cost {cost} exceeds the limit {self.limit}: never admissible")
        token = uuid.uuid4().hex  # member prefix, unique per call
        args = [-1 if now_ms is None else int(now_ms), self.limit, self.window_ms, cost, token]
        ok, remaining, retry_ms = call_script(self._script, [self.key], args)
        return RateDecision(bool(ok), int(remaining), max(0, int(retry_ms)) / 1000)

    def budget(self, *, now_ms: int | None = None) -> RateBudget:
        """The window's use and when its oldest request leaves it; takes no slot (dashboards)."""
        args = [-1 if now_ms is None else int(now_ms), self.window_ms]
        used, resets_ms = call_script(self._peek, [self.key], args)
        return RateBudget(
            self.limit, int(used), max(0, self.limit - int(used)), max(0, int(resets_ms)) / 1000
        )

    def require(self, cost: int = 1) -> None:
        """Take `cost` slots or raise `RateLimited` saying how long to wait."""
        decision = self.acquire(cost)
        if not decision.allowed:
            raise RateLimited(
                f"rate limit {self.name!r} ({self.limit} per {self.window_ms / 1000:g} s) is "
                f"exhausted; retry in {decision.retry_after_seconds:.3f} s"
            )


class CircuitBreaker:
    """Closed -> open after `failure_threshold` failures within `failure_window_seconds`; open for
    `cooldown_seconds`; then half-open lets one probe through (re-granted if it does not report
    within `probe_timeout_seconds`): success closes, failure re-opens. Transitions are one Lua call.

    The key expires after 3x the longest of window and cooldown + probe of inactivity; a lost key
    reads closed (the dependency is simply tried again), which is safe for a breaker.
    """

    def __init__(
        self,
        flags: Flags,
        dependency: str,
        *,
        failure_threshold: int,
        failure_window_seconds: float,
        cooldown_seconds: float,
        probe_timeout_seconds: float,
    ) -> None:
        self.flags = flags
        self.dependency = canonical_name(dependency, "dependency")
        self.failure_threshold = positive_int("failure_threshold", failure_threshold)
        self.window_ms = milliseconds("failure_window_seconds", failure_window_seconds)
        self.cooldown_ms = milliseconds("cooldown_seconds", cooldown_seconds)
        self.probe_ms = milliseconds("probe_timeout_seconds", probe_timeout_seconds)
        self.ttl_ms = 3 * max(self.window_ms, self.cooldown_ms + self.probe_ms)
        self.key = flags.keys.circuit(self.dependency)
        self._script = flags.redis.register_script(_BREAKER)

    def allow(self, *, now_ms: int | None = None) -> bool:
        """May a call to the dependency go now? (may move open -> half-open and grant the probe)"""
        return self.admit(now_ms=now_ms).allowed

    def admit(self, *, now_ms: int | None = None) -> BreakerStatus:
        """`allow`, answering with the whole status (`allowed` says whether the call may go)."""
        return self._op("allow", now_ms)

    def record_success(self, *, now_ms: int | None = None) -> BreakerStatus:
        return self._op("success", now_ms)

    def record_failure(self, *, now_ms: int | None = None) -> BreakerStatus:
        return self._op("failure", now_ms)

    def status(self, *, now_ms: int | None = None) -> BreakerStatus:
        return self._op("status", now_ms)

    def require(self) -> None:
        """Raise `CircuitOpen` (a `DependencyUnavailable`) when the breaker refuses the call."""
        if not self.allow():
            raise CircuitOpen(
                f"circuit for {self.dependency!r} is open; calls resume after the cooldown",
                self.dependency,
            )

    def queue_admit(self, pipe: Pipeline) -> Callable[[Any], BreakerStatus]:
        """`admit` queued on `pipe` (no transaction, run with `raise_on_error=False`), so a
        caller reads other flags in the same round trip: returns what reads the status from its
        reply. A server that lost the script is asked again directly (which loads it); any
        other error raises `DependencyUnavailable`."""
        pipe.evalsha(self._script.sha, 1, self.key, *self._args("allow", None))

        def admitted(reply: Any) -> BreakerStatus:
            if isinstance(reply, redis.exceptions.NoScriptError):
                return self.admit()
            if isinstance(reply, BaseException):
                raise DependencyUnavailable(f"flags Redis: {type(reply).__name__}: {reply}")
            return _status(reply)

        return admitted

    def _op(self, op: str, now_ms: int | None) -> BreakerStatus:
        return _status(call_script(self._script, [self.key], self._args(op, now_ms)))

    def _args(self, op: str, now_ms: int | None) -> list[Any]:
        return [
            -1 if now_ms is None else int(now_ms),
            op,
            self.failure_threshold,
            self.window_ms,
            self.cooldown_ms,
            self.probe_ms,
            self.ttl_ms,
        ]


def _status(reply: Any) -> BreakerStatus:
    state, failures, opened, probe_until, allowed = reply
    return BreakerStatus(
        BreakerState(text(state)), int(failures), int(opened), int(probe_until), bool(allowed)
    )
