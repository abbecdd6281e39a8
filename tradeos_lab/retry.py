"""The one retry policy for calls to the outside: exponential backoff with full jitter.

Only `TransientError` is retried (but not `CircuitOpen`: the breaker decides when the dependency
is tried again, and retrying its refusal would only wait); everything else propagates at once, so
a permanent error (a bad symbol, a 404, a malformed payload) costs one request. A provider's
`Retry-After` wins over the computed delay, up to `max_retry_after`: a provider asking for a longer
pause fails fast with a clear `RateLimited` instead of freezing a notebook. Full jitter follows the
AWS architecture blog ("Exponential Backoff And Jitter"), the same scheme as redis-py's
`ExponentialWithJitterBackoff`.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from tradeos_lab.errors import CircuitOpen, ProviderRateLimited, RateLimited, TransientError

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a transient failure."""

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base < 0 or self.cap < 0 or self.max_retry_after < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)] for the 0-based `attempt`."""
        return self.rng() * min(self.cap, self.base * 2.0**attempt)


def retry_call(fn: Callable[[], T], *, what: str, policy: RetryPolicy | None = None) -> T:
    """Call `fn`, retrying `TransientError` per `policy`; the last failure propagates.

    `what` names the operation in log lines and in the final error; it must hold no secret.
    """
    policy = policy or RetryPolicy()
    for attempt in range(policy.attempts):
        try:
            return fn()
        except CircuitOpen:
            raise
        except TransientError as e:
            last = attempt + 1 == policy.attempts
            delay = policy.backoff(attempt)
            if isinstance(e, ProviderRateLimited) and e.retry_after is not None:
                if e.retry_after > policy.max_retry_after:
                    raise RateLimited(
                        f"{what}: the provider asked to wait {e.retry_after:.0f}s, more than the "
                        f"{policy.max_retry_after:.0f}s we wait in-process; try again later"
                    ) from e
                delay = e.retry_after
            if last:
                raise _gave_up(e, f"{what} failed after {policy.attempts} attempts: {e}") from e
            log.warning(
                "%s failed (%s); retry %d/%d in %.2fs",
                what,
                e,
                attempt + 1,
                policy.attempts - 1,
                delay,
            )
            policy.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _gave_up(error: TransientError, message: str) -> TransientError:
    """The same kind of error, saying that retries are exhausted."""
    try:
        return type(error)(message)
    except TypeError:  # a subclass with another constructor
        return TransientError(message)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from an HTTP `Retry-After` header (delta-seconds or HTTP-date)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
