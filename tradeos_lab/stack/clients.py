"""The one place that builds Redis clients.

Every client uses the hiredis parser, a client name, health checks and retries with exponential
backoff and jitter on connection errors and timeouts only.
"""

from __future__ import annotations

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

from tradeos_lab.errors import DependencyUnavailable, StackError
from tradeos_lab.secrets import redact_url

RETRIES = 6


def make_redis(url: str, *, role: str, client_name: str = "tradeos-lab") -> redis.Redis:
    """A `redis.Redis` for one tier. `url` may carry a password; it is never logged."""
    if not HIREDIS_AVAILABLE:
        raise StackError("the hiredis parser is not installed; reinstall with `pip install -e .`")
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), RETRIES)
    tcp_only = {} if url.startswith("unix://") else {"socket_keepalive": True}
    try:
        return redis.Redis.from_url(
            url,
            client_name=f"{client_name}:{role}",
            retry=retry,
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            health_check_interval=30,
            socket_connect_timeout=5,
            **tcp_only,
        )
    except ValueError as e:
        raise StackError(f"bad {role} URL {redact_url(url)}: {e}") from e


def ping(client: redis.Redis, role: str) -> None:
    """Raise `DependencyUnavailable` when the tier does not answer."""
    try:
        client.ping()
    except redis.RedisError as e:
        raise DependencyUnavailable(f"{role} Redis does not answer: {type(e).__name__}") from e
