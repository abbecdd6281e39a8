"""What every part of the flags tier shares: Redis calls that fail as `DependencyUnavailable`, the
server clock, and checks of the numbers callers pass in."""

from __future__ import annotations

import math
from typing import Any, Final

import redis

from tradeos_lab.errors import DependencyUnavailable, ValidationError

# Lua prologue: `now` in ms from ARGV[1], or the server's clock when ARGV[1] is negative.
NOW_MS: Final = """
local now = tonumber(ARGV[1])
if not now or now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""


def call_script(script: Any, keys: list[str], args: list[Any]) -> Any:
    """Run a registered Lua script; Redis errors become `DependencyUnavailable`."""
    try:
        return script(keys=keys, args=args)
    except redis.RedisError as e:
        raise DependencyUnavailable(f"flags Redis: {type(e).__name__}: {e}") from e


def run_pipeline(pipe: redis.client.Pipeline) -> list[Any]:
    """Execute a pipeline; Redis errors become `DependencyUnavailable`."""
    try:
        return pipe.execute()
    except redis.RedisError as e:
        raise DependencyUnavailable(f"flags Redis: {type(e).__name__}: {e}") from e


def server_time(client: redis.Redis) -> float:
    """The flags server's clock in epoch seconds: every expiry is compared against it."""
    try:
        return seconds(client.time())
    except redis.RedisError as e:
        raise DependencyUnavailable(f"flags Redis: {type(e).__name__}") from e


def seconds(server_time: Any) -> float:
    """redis-py returns TIME as (seconds, microseconds)."""
    sec, usec = server_time
    return int(sec) + int(usec) / 1_000_000


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{name} must be an int >= 1, got {value!r}")
    return value


def milliseconds(name: str, seconds: object) -> int:
    """A duration given in seconds, at least 1 ms, as whole milliseconds."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValidationError(f"{name} must be a number")
    if not math.isfinite(seconds) or seconds < 0.001:
        raise ValidationError(f"{name} must be >= 0.001, got {seconds}")
    return round(seconds * 1000)
