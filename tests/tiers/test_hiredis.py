"""Every client built by `make_redis` parses replies with hiredis (the C parser), not Python,
the RESP3 client of the near cache and its push messages included."""

from __future__ import annotations

from collections.abc import Callable

import hiredis
import redis
from redis._parsers import _HiredisParser
from redis.utils import HIREDIS_AVAILABLE

from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.stack.redis_server import RedisServerProcess
from tradeos_lab.tiers.cache import Cache
from tradeos_lab.tiers.flags import Flags
from tradeos_lab.tiers.near_cache import NearCache


def _parser_of(client: redis.Redis) -> object:
    connection = client.connection_pool.get_connection()
    try:
        return connection._parser
    finally:
        client.connection_pool.release(connection)


def test_the_clients_of_every_tier_parse_with_hiredis(
    shared_redis: redis.Redis, keys: Keys, settings_factory: Callable[..., Settings]
) -> None:
    assert HIREDIS_AVAILABLE
    kwargs = shared_redis.get_connection_kwargs()
    url = f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"
    settings = settings_factory()
    for role in ("bus", "cache", "flags"):
        client = make_redis(url, role=role)
        client.set(keys.dedup(f"hiredis-{role}"), b"1", ex=10)  # a real reply went through it
        parser = _parser_of(client)
        assert isinstance(parser, _HiredisParser), type(parser)
        assert isinstance(parser._reader, hiredis.Reader)
        client.close()
    tiers = (
        Cache(make_redis(url, role="cache"), keys=keys, settings=settings),
        Flags(make_redis(url, role="flags"), keys=keys, settings=settings),
    )
    for tier in tiers:
        tier.redis.ping()
        assert isinstance(_parser_of(tier.redis), _HiredisParser)
        tier.redis.close()


def test_unix_socket_clients_parse_with_hiredis_too(
    redis_server_factory: Callable[..., RedisServerProcess],
) -> None:
    server = redis_server_factory("cache", policy="allkeys-lru", maxmemory="16mb")
    assert server.url.startswith("unix://")
    client = make_redis(server.url, role="cache")
    assert client.ping()
    assert isinstance(_parser_of(client), _HiredisParser)
    client.close()


def test_the_near_cache_connection_speaks_resp3_through_hiredis(
    shared_redis: redis.Redis, keys: Keys
) -> None:
    """The tracked client is RESP3 and still hiredis, pushes included: an invalidation pushed by
    the server reaches the near cache through hiredis's PushNotification."""
    kwargs = shared_redis.get_connection_kwargs()
    url = f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"
    tracked, writer = make_redis(url, role="cache", tracking=True), make_redis(url, role="cache")
    try:
        assert tracked.get_connection_kwargs()["protocol"] == 3
        near = NearCache(tracked, 10)
        key = keys.dedup("hiredis-near")
        writer.set(key, b"1", ex=10)
        assert near.get(key) == b"1"
        writer.set(key, b"2", ex=10)
        writer.ping()
        assert near.get(key) == b"2"
        assert near.stats()["invalidated"] == 1  # the push went through the handler
        parser = near._conn._parser
        assert isinstance(parser, _HiredisParser), type(parser)
        assert isinstance(parser._reader, hiredis.Reader)
        assert parser._hiredis_PushNotificationType is hiredis.PushNotification
        info = writer.client_list()
        assert any(c["name"] == "tradeos-lab:cache:near" and c["resp"] == "3" for c in info)
    finally:
        tracked.close()
        writer.close()
