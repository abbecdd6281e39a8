"""The one place that builds Redis clients.

Every client uses the hiredis parser, a client name, health checks and retries with exponential
backoff and jitter on connection errors and timeouts only. The client a near cache reads through
(`tracking=True`) is pinned to RESP3, whatever redis-py's default protocol: CLIENT TRACKING
delivers its invalidations as RESP3 push messages on the connection that read the key
(`tradeos_lab.tiers.near_cache`).
"""

from __future__ import annotations

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

from tradeos_lab.errors import DependencyUnavailable, StackError
from tradeos_lab.secrets import redact_url

RETRIES = 6


def make_redis(
    url: str, *, role: str, client_name: str = "tradeos-lab", tracking: bool = False
) -> redis.Redis:
    """A `redis.Redis` for one tier. `url` may carry a password; it is never logged.

    `tracking=True` gives the client of a near cache: RESP3 (HELLO 3), named `<name>:<role>:near`
    so `CLIENT LIST` tells it apart; `NearCache` turns CLIENT TRACKING on for its connection.
    """
    if not HIREDIS_AVAILABLE:
        raise StackError("the hiredis parser is not installed; reinstall with `pip install -e .`")
    if tracking:
        import hiredis

        if not hasattr(hiredis, "PushNotification"):
            # An older hiredis hands RESP3 pushes over as replies: invalidations would be lost.
            raise StackError(
                "a near cache needs hiredis >= 3.2; upgrade it or set cache_near_entries=0"
            )
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), RETRIES)
    tcp_only = {} if url.startswith("unix://") else {"socket_keepalive": True}
    # redis-py 8.1 (here) speaks RESP3 by default, older ones RESP2; the others keep the default.
    resp3 = {"protocol": 3} if tracking else {}
    try:
        return redis.Redis.from_url(
            url,
            client_name=f"{client_name}:{role}:near" if tracking else f"{client_name}:{role}",
            retry=retry,
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            health_check_interval=30,
            socket_connect_timeout=5,
            **tcp_only,
            **resp3,
        )
    except ValueError as e:
        raise StackError(f"bad {role} URL {redact_url(url)}: {e}") from e


def ping(client: redis.Redis, role: str) -> None:
    """Raise `DependencyUnavailable` when the tier does not answer."""
    try:
        client.ping()
    except redis.RedisError as e:
        raise DependencyUnavailable(f"{role} Redis does not answer: {type(e).__name__}") from e
