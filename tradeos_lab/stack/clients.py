"""The one place that builds Redis clients.

Every client uses the hiredis parser, a client name, health checks, and connect and read timeouts
from the settings of its tier, so a stalled server (SIGSTOP, a network that swallows packets)
raises `redis.TimeoutError` instead of hanging the caller. Retries differ per tier: bus and cache
retry connection errors and timeouts with exponential backoff and jitter; flags retry only a
dropped connection, once and at once, never a timeout, so a kill-switch check answers (HALTED)
within the flags connect + read timeouts instead of retrying its way past them.

The client a near cache reads through (`tracking=True`) is pinned to RESP3, whatever redis-py's
default protocol: CLIENT TRACKING delivers its invalidations as RESP3 push messages on the
connection that read the key (`tradeos_lab.tiers.near_cache`).
"""

from __future__ import annotations

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

from tradeos_lab.errors import DependencyUnavailable, StackError
from tradeos_lab.secrets import redact_url
from tradeos_lab.settings import RedisRole, Settings

RETRIES = 6


def make_redis(
    url: str,
    *,
    role: RedisRole,
    settings: Settings | None = None,
    client_name: str = "tradeos-lab",
    tracking: bool = False,
) -> redis.Redis:
    """A `redis.Redis` for one tier. `url` may carry a password; it is never logged.

    Timeouts come from `settings` (`<role>_connect_timeout_seconds`, `<role>_read_timeout_seconds`),
    or from their defaults when no settings are given.

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
    connect_timeout, read_timeout = timeouts(role, settings)
    retried, retry = retry_policy(role)
    tcp_only = {} if url.startswith("unix://") else {"socket_keepalive": True}
    # redis-py 8.1 (here) speaks RESP3 by default, older ones RESP2; the others keep the default.
    resp3 = {"protocol": 3} if tracking else {}
    try:
        return redis.Redis.from_url(
            url,
            client_name=f"{client_name}:{role}:near" if tracking else f"{client_name}:{role}",
            retry=retry,
            retry_on_error=list(retried),
            health_check_interval=30,
            socket_connect_timeout=connect_timeout,
            socket_timeout=read_timeout,
            **tcp_only,
            **resp3,
        )
    except ValueError as e:
        raise StackError(f"bad {role} URL {redact_url(url)}: {e}") from e


def timeouts(role: RedisRole, settings: Settings | None) -> tuple[float, float]:
    """(connect, read) timeouts of a tier's clients, in seconds."""
    if settings is not None:
        return settings.redis_timeouts(role)
    fields = Settings.model_fields
    connect = fields[f"{role}_connect_timeout_seconds"].default
    read = fields[f"{role}_read_timeout_seconds"].default
    return float(connect), float(read)


def retry_policy(role: RedisRole) -> tuple[tuple[type[redis.RedisError], ...], Retry]:
    """The errors a tier's client retries, and how.

    Flags reopen a dropped connection once, at once, and never retry a timeout: a kill-switch check
    that times out must read HALTED within one connect + read timeout.
    """
    if role == "flags":
        only_reconnect = (redis.ConnectionError,)
        return only_reconnect, Retry(NoBackoff(), 1, supported_errors=only_reconnect)
    errors = (redis.ConnectionError, redis.TimeoutError)
    return errors, Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), RETRIES, errors)


def ping(client: redis.Redis, role: str) -> None:
    """Raise `DependencyUnavailable` when the tier does not answer."""
    try:
        client.ping()
    except redis.RedisError as e:
        raise DependencyUnavailable(f"{role} Redis does not answer: {type(e).__name__}") from e
