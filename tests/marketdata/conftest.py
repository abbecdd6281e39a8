"""Market-data fixtures: the real cache (shared Redis, per-test namespace), a real lake (chdb in
this test's directory) or PostgreSQL bar store, providers that count what they are asked, and the
fake provider server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from marketdata_helpers import CountingSynthetic, TimedProviderServer
from sqlalchemy import create_engine

from tradeos_lab.bars import BarStore
from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.stores.lake import Lake
from tradeos_lab.tiers.cache import Cache
from tradeos_lab.tiers.flags import Flags


@pytest.fixture
def settings(settings_factory: Callable[..., Settings], namespace: str) -> Settings:
    return settings_factory(namespace=namespace)


@pytest.fixture
def cache(shared_redis: redis.Redis, keys: Keys, settings: Settings) -> Cache:
    return Cache(shared_redis, keys=keys, settings=settings)


@pytest.fixture
def flags(shared_redis: redis.Redis, keys: Keys, settings: Settings) -> Flags:
    return Flags(shared_redis, keys=keys, settings=settings)


@pytest.fixture
def lake(settings: Settings) -> Iterator[Lake]:
    with Lake.open(settings) as opened:
        yield opened


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[BarStore]:
    from tradeos_lab.stores.bars_pg import PostgresBarStore

    engine = create_engine(pg_url)
    try:
        yield PostgresBarStore(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=["lake", "postgres"])
def store(request: pytest.FixtureRequest) -> BarStore:
    """Each bar store in turn: the reader and the backfill must not care which."""
    name = "lake" if request.param == "lake" else "pg_store"
    found: BarStore = request.getfixturevalue(name)
    return found


@pytest.fixture
def provider() -> CountingSynthetic:
    return CountingSynthetic()


@pytest.fixture
def provider_server() -> Iterator[TimedProviderServer]:
    server = TimedProviderServer()
    server.start()
    yield server
    server.stop()
