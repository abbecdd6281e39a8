"""A provider rate limit shared by every process, on the flags tier's sliding window.

Providers take a `limiter` (a zero-argument callable that blocks until one request may go); an
in-process token bucket only protects one process, while a provider's limit applies to the whole
machine or API key. `SharedLimiter` blocks on `Flags.rate_limiter`, whose window lives in Redis,
so two backfills, a reader and the ingestion service together stay inside one budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from tradeos_lab.tiers.flags import Flags, RateLimiter

#: Documented public limits: (requests, window seconds) per provider.
PROVIDER_LIMITS: Final[dict[str, tuple[int, float]]] = {
    "coinbase": (10, 1.0),
    "alpaca": (200, 60.0),
}


class SharedLimiter:
    """Blocks until the shared window `name` admits one more request."""

    def __init__(
        self,
        flags: Flags,
        name: str,
        *,
        limit: int,
        window_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.window: RateLimiter = flags.rate_limiter(
            name, limit=limit, window_seconds=window_seconds
        )
        self.name = name
        self._sleep = sleep
        self.waited_seconds = 0.0

    @classmethod
    def for_provider(
        cls,
        flags: Flags,
        provider: str,
        *,
        limit: int | None = None,
        window_seconds: float | None = None,
    ) -> SharedLimiter:
        """The machine-wide limiter of one provider (`provider.coinbase`, ...), documented
        limits unless overridden."""
        default_limit, default_window = PROVIDER_LIMITS.get(provider, (10, 1.0))
        return cls(
            flags,
            f"provider.{provider}",
            limit=limit or default_limit,
            window_seconds=window_seconds or default_window,
        )

    def __call__(self) -> None:
        while True:
            decision = self.window.acquire()
            if decision.allowed:
                return
            # The window says when its oldest request leaves; never spin on a zero wait.
            wait = max(decision.retry_after_seconds, 0.001)
            self.waited_seconds += wait
            self._sleep(wait)

    def __repr__(self) -> str:
        return (
            f"SharedLimiter({self.name!r}, {self.window.limit} per "
            f"{self.window.window_ms / 1000:g} s)"
        )
