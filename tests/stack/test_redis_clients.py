"""Clients built by `make_redis` carry their tier's timeouts, and the bus's still allows blocking
reads longer than the short flags and cache timeouts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tradeos_lab.keys import Keys
from tradeos_lab.settings import RedisRole, Settings
from tradeos_lab.stack.clients import make_redis


@pytest.mark.parametrize("role", ["bus", "cache", "flags"])
def test_every_client_gets_its_tiers_connect_and_read_timeouts(
    shared_redis_url: str, settings_factory: Callable[..., Settings], role: RedisRole
) -> None:
    settings = settings_factory(
        **{f"{role}_connect_timeout_seconds": 0.7, f"{role}_read_timeout_seconds": 0.9}
    )
    client = make_redis(shared_redis_url, role=role, settings=settings)
    try:
        options = client.connection_pool.connection_kwargs
        assert (options["socket_connect_timeout"], options["socket_timeout"]) == (0.7, 0.9)
        assert client.ping()
    finally:
        client.close()


def test_clients_without_settings_still_time_out() -> None:
    for role in ("bus", "cache", "flags"):
        options = make_redis(
            "redis://127.0.0.1:6379/0", role=role
        ).connection_pool.connection_kwargs
        assert options["socket_timeout"] is not None
        assert options["socket_connect_timeout"] is not None


def test_a_bus_blocking_read_outlasts_the_flags_and_cache_read_timeouts(
    shared_redis_url: str, settings_factory: Callable[..., Settings], keys: Keys
) -> None:
    settings = settings_factory()
    longest_short = max(settings.flags_read_timeout_seconds, settings.cache_read_timeout_seconds)
    block_ms = int((longest_short + 0.2) * 1000)
    bus = make_redis(shared_redis_url, role="bus", settings=settings)
    try:
        # Nothing arrives: the read blocks for block_ms and returns empty instead of timing out.
        assert bus.xread({keys.stream("orders"): "$"}, block=block_ms, count=1) in ([], {}, None)
    finally:
        bus.close()
