"""The worker registry: heartbeats in one sorted set scored by time, so live and stale workers are
range queries (never SCAN), plus one info hash per worker that expires on its own.

Every heartbeat also pushes out the kill-switch registry's TTL, so the registry never expires while
any worker runs (see `kill_switches`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import redis

from tradeos_lab.errors import ValidationError
from tradeos_lab.keys import Keys
from tradeos_lab.symbols import canonical_name
from tradeos_lab.tiers.flags.plumbing import call_script, run_pipeline, text

# Joins service and instance in a registry member; no name contains it (names may contain ':').
_MEMBER_SEPARATOR: Final = "|"


@dataclass(frozen=True)
class Worker:
    """One registered worker; `last_seen` is epoch seconds on the flags server's clock."""

    service: str
    instance: str
    last_seen: float
    age_seconds: float
    info: dict[str, str] = field(default_factory=dict)


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


class Workers:
    """Heartbeats, live and stale workers, reaping, clean departure."""

    def __init__(
        self,
        redis: redis.Redis,
        *,
        keys: Keys,
        heartbeat_ttl_seconds: int,
        registry_ttl_seconds: int,
        kill_ttl_seconds: int,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.heartbeat_ttl_seconds = heartbeat_ttl_seconds
        self.registry_ttl_seconds = registry_ttl_seconds
        self.kill_ttl_seconds = kill_ttl_seconds
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._workers = redis.register_script(_WORKERS)

    def heartbeat(
        self,
        service: str,
        instance: str,
        info: Mapping[str, str | int | float] | None = None,
        *,
        now: float | None = None,
    ) -> float:
        """Record that a worker is alive; also keeps the kill-switch registry from expiring."""
        service, instance = _worker(service, instance)
        member = f"{service}{_MEMBER_SEPARATOR}{instance}"
        pairs: list[str] = []
        for k, v in (info or {}).items():
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise ValidationError(f"worker info {k!r} must be str, int or float")
            pairs += [canonical_name(k, "worker info field"), str(v)]
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
        return float(call_script(self._heartbeat, keys, args))

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
            run_pipeline(pipe)
        return workers

    def deregister(self, service: str, instance: str) -> bool:
        """A worker leaving cleanly removes itself."""
        service, instance = _worker(service, instance)
        member = f"{service}{_MEMBER_SEPARATOR}{instance}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.keys.workers(), member)
        pipe.delete(self.keys.heartbeat(service, instance))
        removed, _ = run_pipeline(pipe)
        return bool(removed)

    def _query_workers(self, mode: str, max_age: float | None, now: float | None) -> list[Worker]:
        age = float(self.heartbeat_ttl_seconds if max_age is None else max_age)
        if not math.isfinite(age) or age < 0:
            raise ValidationError(f"max_age_seconds must be >= 0, got {max_age}")
        args = ["" if now is None else repr(float(now)), repr(age), mode]
        server_now, rows = call_script(self._workers, [self.keys.workers()], args)
        current = float(server_now)
        members = [(text(rows[i]), float(rows[i + 1])) for i in range(0, len(rows), 2)]
        pipe = self.redis.pipeline(transaction=False)
        for member, _ in members:
            service, _, instance = member.partition(_MEMBER_SEPARATOR)
            pipe.hgetall(self.keys.heartbeat(service, instance))
        infos = run_pipeline(pipe) if members else []
        out = []
        for (member, seen), info in zip(members, infos, strict=True):
            service, _, instance = member.partition(_MEMBER_SEPARATOR)
            details = {text(k): text(v) for k, v in info.items() if text(k) != "_last_seen"}
            out.append(Worker(service, instance, seen, max(0.0, current - seen), details))
        return out


def _worker(service: object, instance: object) -> tuple[str, str]:
    return canonical_name(service, "service"), canonical_name(instance, "instance")
