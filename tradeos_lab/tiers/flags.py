"""The flags tier: kill switches, rate limits, circuit breakers, dedup keys and worker heartbeats.

Seed 000 layer 3: a Redis with `volatile-ttl` eviction where every key carries an explicit TTL and
nothing is a source of truth. That is fine for rate limits and heartbeats, but a kill switch must
not be released by a TTL, by eviction, by a restart of the server or by the server being down.
How the kill switches stay fail-closed:

1. Every switch, plus an `armed` sentinel, lives in ONE hash (`Keys.kill_switches()`). Eviction and
   expiry remove a key, never a field, so the switches are either all there or all gone.
2. A read that does not find the `armed` field answers HALTED for every order. The sentinel is only
   written by `arm()`, an explicit, audited operator action; writing a switch into a lost registry
   recreates the hash without it, so it still reads HALTED. A fresh or restarted flags server thus
   halts trading until someone arms it: we cannot tell "never halted" from "halt was lost".
3. The hash has a long TTL (`kill_ttl_seconds`, 30 days by default) refreshed by every kill-switch
   write, by `refresh()` and by every worker heartbeat, so it never expires while the system runs;
   under `volatile-ttl` it is also the last key to be evicted (the one farthest from expiry).
4. A manual switch has no expiry of its own and is removed only by `clear()` with an actor and a
   reason; `clear()` and `arm()` return an audit record the caller publishes to the `audit`
   stream. Agent switches may carry their own expiry, compared against the server's clock.
5. Any Redis error, a corrupt entry or an unknown mode during a check reads as HALTED.

Cancels are always allowed (`check_cancel`): they only ever reduce risk.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, TypeVar

import redis

from tradeos_lab.errors import DependencyUnavailable, RateLimited, TradingHalted, ValidationError
from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.symbols import validate_symbol

KILL_TTL_SECONDS: Final = 30 * 86_400
REGISTRY_TTL_SECONDS: Final = 86_400
_ARMED: Final = "armed"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_KEY = re.compile(r"[!-~]{1,256}")  # printable ASCII without spaces


class KillMode(StrEnum):
    """HALTED: no new orders (cancels allowed). REDUCING: only exposure-reducing orders."""

    HALTED = "HALTED"
    REDUCING = "REDUCING"


class KillScope(StrEnum):
    GLOBAL = "global"
    STRATEGY = "strategy"
    SYMBOL = "symbol"


class KillSource(StrEnum):
    MANUAL = "manual"
    AGENT = "agent"


@dataclass(frozen=True)
class KillSwitch:
    """One engaged switch. `expires_at` (epoch s, server clock) is None for a lasting switch."""

    scope: KillScope
    target: str
    source: KillSource
    mode: KillMode
    actor: str
    reason: str
    since: float
    expires_at: float | None = None

    @property
    def field(self) -> str:
        return f"{self.scope.value}:{self.target}:{self.source.value}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope.value,
            "target": self.target,
            "source": self.source.value,
            "mode": self.mode.value,
            "actor": self.actor,
            "reason": self.reason,
            "since": self.since,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_json(cls, raw: bytes | str) -> KillSwitch:
        """Decode a stored switch; raises ValueError/KeyError/TypeError on anything unexpected."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError(f"a kill switch is a JSON object, got {type(data).__name__}")
        expires = data.get("expires_at")
        return cls(
            scope=KillScope(data["scope"]),
            target=str(data["target"]),
            source=KillSource(data["source"]),
            mode=KillMode(data["mode"]),
            actor=str(data["actor"]),
            reason=str(data["reason"]),
            since=float(data["since"]),
            expires_at=None if expires is None else float(expires),
        )


@dataclass(frozen=True)
class Decision:
    """The answer to "may this order go?"; `mode` is the strictest switch that applies."""

    allowed: bool
    mode: KillMode | None
    reason: str
    switches: tuple[KillSwitch, ...] = ()

    def raise_if_denied(self) -> None:
        if not self.allowed:
            raise TradingHalted(self.reason)


@dataclass(frozen=True)
class KillState:
    """Every kill switch at one instant. `mode` is the global effect: HALTED when the tier is
    unreachable, the registry is not armed, or a global HALTED switch is engaged."""

    reachable: bool
    armed: bool
    mode: KillMode | None
    reason: str
    switches: tuple[KillSwitch, ...] = ()
    armed_by: dict[str, Any] | None = None


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    remaining: int
    retry_after_seconds: float


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


@dataclass(frozen=True)
class Worker:
    """One registered worker; `last_seen` is epoch seconds on the flags server's clock."""

    service: str
    instance: str
    last_seen: float
    age_seconds: float
    info: dict[str, str] = field(default_factory=dict)


# ---- Lua ------------------------------------------------------------------------------------

_NOW_MS = """
local now = tonumber(ARGV[1])
if not now or now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Sliding-window log: one sorted-set member per admitted request, scored by its time in ms.
# ARGV: now ms (-1 = server clock), limit, window ms, cost, unique token.
_RATE = (
    _NOW_MS
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

# Circuit breaker. A missing key is "closed, no failures", so closed+0 deletes the key.
# ARGV: now ms, op (allow|success|failure|status), threshold, window ms, cooldown ms,
# probe timeout ms, ttl ms.
_BREAKER = (
    _NOW_MS
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

# Heartbeat. KEYS: workers zset, worker info hash, kill-switch registry.
# ARGV: now s ('' = server clock), member, info ttl, registry ttl, kill ttl, info pairs...
_HEARTBEAT = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local stamp = string.format('%.6f', now)
redis.call('ZADD', KEYS[1], stamp, ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], '_last_seen', stamp, unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[5])
return stamp
"""

# Workers by last heartbeat. ARGV: now s ('' = server clock), max age s, 'stale'|'live'|'reap'.
_WORKERS = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local cutoff = string.format('%.6f', now - tonumber(ARGV[2]))
local rows
if ARGV[3] == 'live' then
  rows = redis.call('ZRANGEBYSCORE', KEYS[1], cutoff, '+inf', 'WITHSCORES')
else
  rows = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff, 'WITHSCORES')
  if ARGV[3] == 'reap' then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff) end
end
return {string.format('%.6f', now), rows}
"""

# Drop agent switches whose own expiry has passed; refresh the registry TTL when it exists;
# answer whether the `armed` sentinel is there.
_PURGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local all = redis.call('HGETALL', KEYS[1])
local dropped = 0
for i = 1, #all, 2 do
  if all[i] ~= 'armed' then
    local ok, sw = pcall(cjson.decode, all[i + 1])
    if ok and type(sw) == 'table' and type(sw['expires_at']) == 'number'
        and sw['expires_at'] <= now then
      redis.call('HDEL', KEYS[1], all[i]); dropped = dropped + 1
    end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {redis.call('HEXISTS', KEYS[1], 'armed'), dropped}
"""


# ---- the tier -------------------------------------------------------------------------------


class Flags:
    """Ephemeral flags over the flags Redis (volatile-ttl); see the module docstring for the
    fail-closed design of the kill switches."""

    def __init__(
        self,
        redis: redis.Redis,
        *,
        keys: Keys,
        settings: Settings,
        kill_ttl_seconds: int = KILL_TTL_SECONDS,
        registry_ttl_seconds: int = REGISTRY_TTL_SECONDS,
    ) -> None:
        if kill_ttl_seconds < 60 or registry_ttl_seconds < 60:
            raise ValidationError("kill_ttl_seconds and registry_ttl_seconds must be >= 60")
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.kill_ttl_seconds = kill_ttl_seconds
        self.registry_ttl_seconds = registry_ttl_seconds
        self.heartbeat_ttl_seconds = settings.limits.heartbeat_ttl_seconds
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._workers = redis.register_script(_WORKERS)
        self._purge = redis.register_script(_PURGE)

    # ---- kill switches: writes ----------------------------------------------------------

    def arm(self, *, actor: str, reason: str) -> dict[str, Any]:
        """Mark the registry as known-good so orders may flow where no switch applies.

        Needed once on a fresh flags server and again whenever the registry was lost (expiry,
        eviction, restart): arming then forgets whatever switches were lost, hence the audit.
        """
        actor, reason = _actor(actor), _reason(reason)
        key = self.keys.kill_switches()
        now = self._server_time()
        epoch = uuid.uuid4().hex
        sentinel = {"epoch": epoch, "actor": actor, "reason": reason, "at": now}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(key, _ARMED)
        pipe.hset(key, _ARMED, json.dumps(sentinel))
        pipe.expire(key, self.kill_ttl_seconds)
        previous, _, _ = self._run(pipe)
        return _audit(
            "kill_switch.armed",
            actor,
            reason,
            now,
            epoch=epoch,
            was_armed=previous is not None,
        )

    def engage(
        self,
        scope: KillScope | str,
        mode: KillMode | str,
        *,
        target: str | None = None,
        source: KillSource | str = KillSource.MANUAL,
        actor: str,
        reason: str,
        ttl_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Engage (or replace) a switch; returns the audit record to publish.

        Only agent switches may have `ttl_seconds`: a manual halt never lifts by itself.
        """
        scope_, target_, source_ = _where(scope, target, source)
        mode_ = _enum(KillMode, mode, "mode")
        actor, reason = _actor(actor), _reason(reason)
        if ttl_seconds is not None:
            if source_ is KillSource.MANUAL:
                raise ValidationError("a manual switch cannot expire; clear it explicitly")
            if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int | float):
                raise ValidationError("ttl_seconds must be a number")
            if not math.isfinite(ttl_seconds) or ttl_seconds <= 0:
                raise ValidationError(f"ttl_seconds must be > 0, got {ttl_seconds}")
        now = self._server_time()
        switch = KillSwitch(
            scope=scope_,
            target=target_,
            source=source_,
            mode=mode_,
            actor=actor,
            reason=reason,
            since=now,
            expires_at=None if ttl_seconds is None else now + float(ttl_seconds),
        )
        key = self.keys.kill_switches()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, switch.field, json.dumps(switch.as_dict()))
        pipe.expire(key, self.kill_ttl_seconds)
        self._run(pipe)
        return _audit("kill_switch.engaged", actor, reason, now, switch=switch.as_dict())

    def clear(
        self,
        scope: KillScope | str,
        *,
        target: str | None = None,
        source: KillSource | str = KillSource.MANUAL,
        actor: str,
        reason: str,
    ) -> dict[str, Any]:
        """Remove one switch; the audit record names who, why and what was cleared (or None)."""
        scope_, target_, source_ = _where(scope, target, source)
        actor, reason = _actor(actor), _reason(reason)
        fieldname = f"{scope_.value}:{target_}:{source_.value}"
        key = self.keys.kill_switches()
        now = self._server_time()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(key, fieldname)
        pipe.hdel(key, fieldname)
        pipe.expire(key, self.kill_ttl_seconds)
        previous, _, _ = self._run(pipe)
        cleared: dict[str, Any] | None = None
        if previous is not None:
            try:
                cleared = KillSwitch.from_json(previous).as_dict()
            except (ValueError, KeyError, TypeError):
                cleared = {"field": fieldname, "unreadable": True}
        return _audit(
            "kill_switch.cleared",
            actor,
            reason,
            now,
            scope=scope_.value,
            target=target_,
            source=source_.value,
            cleared=cleared,
        )

    def refresh(self) -> bool:
        """Drop expired agent switches and push the registry's TTL out.

        Returns whether the registry is armed; False means every order reads HALTED until `arm`.
        """
        armed, _ = _call(self._purge, [self.keys.kill_switches()], [self.kill_ttl_seconds])
        return bool(armed)

    # ---- kill switches: reads (fail closed) ---------------------------------------------

    def check_order(self, strategy: str, symbol: str, reduces_exposure: bool) -> Decision:
        """May a new order of `strategy` in `symbol` go? Any doubt answers HALTED."""
        strategy = _name("strategy", strategy)
        symbol = validate_symbol(symbol)
        if not isinstance(reduces_exposure, bool):
            raise ValidationError("reduces_exposure must be a bool")
        fields = [
            f"{scope}:{target}:{source.value}"
            for scope, target in (("global", "*"), ("strategy", strategy), ("symbol", symbol))
            for source in KillSource
        ]
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hmget(self.keys.kill_switches(), [_ARMED, *fields])
            pipe.time()
            values, server_time = pipe.execute()
        except redis.RedisError as e:
            return _halted(f"flags tier unreachable ({type(e).__name__}): failing closed")
        try:
            if values[0] is None:
                return _halted(_NOT_ARMED)
            active, problem = _active(zip(fields, values[1:], strict=True), _seconds(server_time))
            if problem:
                return _halted(problem, active)
            return _decide(active, reduces_exposure)
        except Exception as e:  # a decision we cannot compute must not let an order through
            return _halted(f"kill-switch check failed ({type(e).__name__}): failing closed")

    def check_cancel(self, strategy: str, symbol: str) -> Decision:
        """Cancels are always allowed, whatever the switches or the tier's health."""
        _name("strategy", strategy)
        validate_symbol(symbol)
        return Decision(True, None, "cancels are always allowed")

    def state(self) -> KillState:
        """All switches now, for dashboards and the CLI; unreachable or unarmed reads HALTED."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(self.keys.kill_switches())
            pipe.time()
            raw, server_time = pipe.execute()
        except redis.RedisError as e:
            reason = f"flags tier unreachable ({type(e).__name__}): failing closed"
            return KillState(reachable=False, armed=False, mode=KillMode.HALTED, reason=reason)
        entries = {_text(k): v for k, v in raw.items()}
        sentinel = entries.pop(_ARMED, None)
        active, problem = _active(sorted(entries.items()), _seconds(server_time))
        armed_by = _sentinel(sentinel)
        if sentinel is None:
            return KillState(True, False, KillMode.HALTED, _NOT_ARMED, active)
        if problem:
            return KillState(True, True, KillMode.HALTED, problem, active, armed_by)
        globals_ = [s for s in active if s.scope is KillScope.GLOBAL]
        mode = None
        if any(s.mode is KillMode.HALTED for s in globals_):
            mode = KillMode.HALTED
        elif globals_:
            mode = KillMode.REDUCING
        reason = _describe(tuple(globals_)) if globals_ else "no global switch"
        return KillState(True, True, mode, reason, active, armed_by)

    # ---- rate limits, circuit breakers, dedup -------------------------------------------

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

    def claim_once(self, key: str, *, ttl_seconds: int) -> bool:
        """True the first time `key` is claimed within `ttl_seconds` (SET NX EX), else False."""
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValidationError("a dedup key is 1-256 printable ASCII characters without spaces")
        _positive_int("ttl_seconds", ttl_seconds)
        try:
            return bool(self.redis.set(self.keys.dedup(key), b"1", nx=True, ex=ttl_seconds))
        except redis.RedisError as e:
            raise DependencyUnavailable(f"flags Redis: {type(e).__name__}") from e

    def release_claim(self, key: str) -> bool:
        """Forget a dedup key (the operation failed and may be retried)."""
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValidationError("a dedup key is 1-256 printable ASCII characters without spaces")
        try:
            return bool(self.redis.delete(self.keys.dedup(key)))
        except redis.RedisError as e:
            raise DependencyUnavailable(f"flags Redis: {type(e).__name__}") from e

    # ---- worker registry (seed 004: a sorted set, never SCAN) ---------------------------

    def heartbeat(
        self,
        service: str,
        instance: str,
        info: Mapping[str, str | int | float] | None = None,
        *,
        now: float | None = None,
    ) -> float:
        """Record that a worker is alive; also keeps the kill-switch registry from expiring."""
        member = f"{_name('service', service)}:{_name('instance', instance)}"
        pairs: list[str] = []
        for k, v in (info or {}).items():
            if not isinstance(k, str) or not _NAME.fullmatch(k):
                raise ValidationError(f"bad worker info field {k!r}")
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise ValidationError(f"worker info {k} must be str, int or float")
            pairs += [k, str(v)]
        keys = [
            self.keys.workers(),
            self.keys.heartbeat(service, instance),
            self.keys.kill_switches(),
        ]
        args: list[str | int] = [
            "" if now is None else repr(float(now)),
            member,
            self.registry_ttl_seconds,
            self.registry_ttl_seconds,
            self.kill_ttl_seconds,
            *pairs,
        ]
        return float(_call(self._heartbeat, keys, args))

    def live_workers(
        self, *, max_age_seconds: float | None = None, now: float | None = None
    ) -> list[Worker]:
        """Workers seen within `max_age_seconds` (default: the profile's heartbeat TTL)."""
        return self._query_workers("live", max_age_seconds, now)

    def stale_workers(
        self, *, max_age_seconds: float | None = None, now: float | None = None
    ) -> list[Worker]:
        """Workers not seen within `max_age_seconds`, oldest first (ZRANGEBYSCORE, O(log N + M))."""
        return self._query_workers("stale", max_age_seconds, now)

    def reap_stale(
        self, *, max_age_seconds: float | None = None, now: float | None = None
    ) -> list[Worker]:
        """Remove stale workers from the registry and return them."""
        workers = self._query_workers("reap", max_age_seconds, now)
        if workers:
            pipe = self.redis.pipeline(transaction=False)
            for w in workers:
                pipe.delete(self.keys.heartbeat(w.service, w.instance))
            self._run(pipe)
        return workers

    def deregister(self, service: str, instance: str) -> bool:
        """A worker leaving cleanly removes itself."""
        member = f"{_name('service', service)}:{_name('instance', instance)}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.keys.workers(), member)
        pipe.delete(self.keys.heartbeat(service, instance))
        removed, _ = self._run(pipe)
        return bool(removed)

    def _query_workers(self, mode: str, max_age: float | None, now: float | None) -> list[Worker]:
        age = float(self.heartbeat_ttl_seconds if max_age is None else max_age)
        if not math.isfinite(age) or age < 0:
            raise ValidationError(f"max_age_seconds must be >= 0, got {max_age}")
        args = ["" if now is None else repr(float(now)), repr(age), mode]
        server_now, rows = _call(self._workers, [self.keys.workers()], args)
        current = float(server_now)
        members = [(_text(rows[i]), float(rows[i + 1])) for i in range(0, len(rows), 2)]
        pipe = self.redis.pipeline(transaction=False)
        for member, _ in members:
            service, _, instance = member.partition(":")
            pipe.hgetall(self.keys.heartbeat(service, instance))
        infos = self._run(pipe) if members else []
        out = []
        for (member, seen), info in zip(members, infos, strict=True):
            service, _, instance = member.partition(":")
            details = {_text(k): _text(v) for k, v in info.items() if _text(k) != "_last_seen"}
            out.append(Worker(service, instance, seen, max(0.0, current - seen), details))
        return out

    # ---- plumbing -----------------------------------------------------------------------

    def _server_time(self) -> float:
        try:
            return _seconds(self.redis.time())
        except redis.RedisError as e:
            raise DependencyUnavailable(f"flags Redis: {type(e).__name__}") from e

    def _run(self, pipe: redis.client.Pipeline) -> list[Any]:
        try:
            return pipe.execute()
        except redis.RedisError as e:
            raise DependencyUnavailable(f"flags Redis: {type(e).__name__}: {e}") from e


class RateLimiter:
    """Atomic sliding window: at most `limit` requests in any `window_seconds` (Lua, one call)."""

    def __init__(self, flags: Flags, name: str, *, limit: int, window_seconds: float) -> None:
        self.flags = flags
        self.name = _name("rate limit", name)
        self.limit = _positive_int("limit", limit)
        if isinstance(window_seconds, bool) or not isinstance(window_seconds, int | float):
            raise ValidationError("window_seconds must be a number")
        if not math.isfinite(window_seconds) or window_seconds < 0.001:
            raise ValidationError(f"window_seconds must be >= 0.001, got {window_seconds}")
        self.window_ms = round(window_seconds * 1000)
        self.key = flags.keys.rate_limit(self.name)
        self._script = flags.redis.register_script(_RATE)

    def acquire(self, cost: int = 1, *, now_ms: int | None = None) -> RateDecision:
        """Take `cost` slots if they fit in the window; never blocks."""
        _positive_int("cost", cost)
        if cost > self.limit:
            raise ValidationError(f"cost {cost} exceeds the limit {self.limit}: never admissible")
        token = uuid.uuid4().hex  # member prefix, unique per call
        args = [-1 if now_ms is None else int(now_ms), self.limit, self.window_ms, cost, token]
        ok, remaining, retry_ms = _call(self._script, [self.key], args)
        return RateDecision(bool(ok), int(remaining), max(0, int(retry_ms)) / 1000)

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
        self.dependency = _name("dependency", dependency)
        self.failure_threshold = _positive_int("failure_threshold", failure_threshold)
        self.window_ms = _ms("failure_window_seconds", failure_window_seconds)
        self.cooldown_ms = _ms("cooldown_seconds", cooldown_seconds)
        self.probe_ms = _ms("probe_timeout_seconds", probe_timeout_seconds)
        self.ttl_ms = 3 * max(self.window_ms, self.cooldown_ms + self.probe_ms)
        self.key = flags.keys.circuit(self.dependency)
        self._script = flags.redis.register_script(_BREAKER)

    def allow(self, *, now_ms: int | None = None) -> bool:
        """May a call to the dependency go now? (may move open -> half-open and grant the probe)"""
        return self._op("allow", now_ms).allowed

    def record_success(self, *, now_ms: int | None = None) -> BreakerStatus:
        return self._op("success", now_ms)

    def record_failure(self, *, now_ms: int | None = None) -> BreakerStatus:
        return self._op("failure", now_ms)

    def status(self, *, now_ms: int | None = None) -> BreakerStatus:
        return self._op("status", now_ms)

    def require(self) -> None:
        """Raise `DependencyUnavailable` when the breaker refuses the call."""
        if not self.allow():
            raise DependencyUnavailable(
                f"circuit for {self.dependency!r} is open; calls resume after the cooldown"
            )

    def _op(self, op: str, now_ms: int | None) -> BreakerStatus:
        args = [
            -1 if now_ms is None else int(now_ms),
            op,
            self.failure_threshold,
            self.window_ms,
            self.cooldown_ms,
            self.probe_ms,
            self.ttl_ms,
        ]
        state, failures, opened, probe_until, allowed = _call(self._script, [self.key], args)
        return BreakerStatus(
            BreakerState(_text(state)), int(failures), int(opened), int(probe_until), bool(allowed)
        )


# ---- helpers --------------------------------------------------------------------------------

_NOT_ARMED: Final = (
    "kill-switch registry missing (never armed, expired, evicted or the flags server restarted): "
    "halted until an operator arms it"
)


def _call(script: Any, keys: list[str], args: list[Any]) -> Any:
    """Run a registered Lua script; Redis errors become `DependencyUnavailable`."""
    try:
        return script(keys=keys, args=args)
    except redis.RedisError as e:
        raise DependencyUnavailable(f"flags Redis: {type(e).__name__}: {e}") from e


def _decide(active: tuple[KillSwitch, ...], reduces_exposure: bool) -> Decision:
    """HALTED beats REDUCING beats nothing; REDUCING lets exposure-reducing orders through."""
    halts = tuple(s for s in active if s.mode is KillMode.HALTED)
    if halts:
        return Decision(False, KillMode.HALTED, _describe(halts), halts)
    if not active:
        return Decision(True, None, "no kill switch applies")
    reason = _describe(active)
    if reduces_exposure:
        return Decision(True, KillMode.REDUCING, f"reducing order allowed: {reason}", active)
    return Decision(False, KillMode.REDUCING, f"only reducing orders: {reason}", active)


def _halted(reason: str, switches: tuple[KillSwitch, ...] = ()) -> Decision:
    return Decision(False, KillMode.HALTED, reason, switches)


def _active(
    entries: Iterable[tuple[str, bytes | str | None]], now: float
) -> tuple[tuple[KillSwitch, ...], str | None]:
    """Decode present switches, dropping agent switches past their expiry; report corrupt ones."""
    active: list[KillSwitch] = []
    problem = None
    for fieldname, raw in entries:
        if raw is None:
            continue
        try:
            switch = KillSwitch.from_json(raw)
        except Exception:  # unreadable in any way: fail closed
            problem = (
                f"kill switch {fieldname!r} is unreadable or has an unknown mode: failing closed"
            )
            continue
        if switch.expires_at is not None and switch.expires_at <= now:
            continue
        active.append(switch)
    return tuple(active), problem


def _describe(switches: tuple[KillSwitch, ...] | list[KillSwitch]) -> str:
    return "; ".join(
        f"{s.mode.value} by {s.source.value} switch {s.scope.value}:{s.target} ({s.reason})"
        for s in switches
    )


def _sentinel(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return {"unreadable": True}
    return data if isinstance(data, dict) else {"unreadable": True}


def _audit(event: str, actor: str, reason: str, at: float, **details: Any) -> dict[str, Any]:
    return {
        "event": event,
        "actor": actor,
        "reason": reason,
        "at": datetime.fromtimestamp(at, UTC).isoformat(),
        **details,
    }


def _where(
    scope: KillScope | str, target: str | None, source: KillSource | str
) -> tuple[KillScope, str, KillSource]:
    scope_ = _enum(KillScope, scope, "scope")
    source_ = _enum(KillSource, source, "source")
    if scope_ is KillScope.GLOBAL:
        if target not in (None, "*"):
            raise ValidationError("a global switch takes no target")
        return scope_, "*", source_
    if target is None:
        raise ValidationError(f"a {scope_.value} switch needs a target")
    if scope_ is KillScope.SYMBOL:
        return scope_, validate_symbol(target), source_
    return scope_, _name("strategy", target), source_


_E = TypeVar("_E", bound=StrEnum)


def _enum(kind: type[_E], value: object, what: str) -> _E:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return kind(value)
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        raise ValidationError(f"unknown {what} {value!r}; choose one of {choices}") from None


def _name(what: str, value: object) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValidationError(f"bad {what} {value!r}: 1-64 of [A-Za-z0-9_.-], no colon")
    return value


def _actor(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        raise ValidationError("actor must be a non-empty name of at most 128 characters")
    return value.strip()


def _reason(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 1024:
        raise ValidationError("reason must be non-empty text of at most 1024 characters")
    return value.strip()


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _ms(name: str, seconds: object) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValidationError(f"{name} must be a number")
    if not math.isfinite(seconds) or seconds < 0.001:
        raise ValidationError(f"{name} must be >= 0.001, got {seconds}")
    return round(seconds * 1000)


def _seconds(server_time: Any) -> float:
    """redis-py returns TIME as (seconds, microseconds)."""
    sec, usec = server_time
    return int(sec) + int(usec) / 1_000_000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
