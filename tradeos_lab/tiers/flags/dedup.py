"""Dedup keys: "has this operation been done already?" for a bounded time (SET NX EX)."""

from __future__ import annotations

import re
from typing import Final

import redis

from tradeos_lab.errors import DependencyUnavailable, ValidationError
from tradeos_lab.keys import Keys
from tradeos_lab.tiers.flags.plumbing import positive_int

_KEY: Final = re.compile(r"[!-~]{1,256}")  # printable ASCII without spaces


class Dedup:
    """Claims that expire: the first caller of a key within its TTL wins."""

    def __init__(self, redis: redis.Redis, *, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    def claim_once(self, key: str, *, ttl_seconds: int) -> bool:
        """True the first time `key` is claimed within `ttl_seconds` (SET NX EX), else False."""
        _check_key(key)
        positive_int("ttl_seconds", ttl_seconds)
        try:
            return bool(self.redis.set(self.keys.dedup(key), b"1", nx=True, ex=ttl_seconds))
        except redis.RedisError as e:
            raise DependencyUnavailable(f"flags Redis: {type(e).__name__}") from e

    def release_claim(self, key: str) -> bool:
        """Forget a dedup key (the operation failed and may be retried)."""
        _check_key(key)
        try:
            return bool(self.redis.delete(self.keys.dedup(key)))
        except redis.RedisError as e:
            raise DependencyUnavailable(f"flags Redis: {type(e).__name__}") from e


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValidationError("a dedup key is 1-256 printable ASCII characters without spaces")
