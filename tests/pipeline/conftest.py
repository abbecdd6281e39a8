"""Labs for pipeline tests: on the machine's servers (the default) and on the embedded stack.

`pipeline_lab`: the machine's Redis 7 (bus db 0, cache db 1, flags db 2, all under this test's own
namespace) and a fresh PostgreSQL records database, migrated; the kill switches are armed, so
services may trade until a test engages one. `pipeline_settings` are its settings, for starting
services in subprocesses. `embedded_pipeline_lab`: the same on an embedded stack this test owns
(SQLite records, redis-servers from the wheel), for what only the default setup shows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

import tradeos_lab as tl
from tradeos_lab import operator
from tradeos_lab.lab import Lab
from tradeos_lab.settings import Settings, SharedRedisServerWarning
from tradeos_lab.stores.records import RecordsStore


@pytest.fixture
def pipeline_settings(
    settings_factory: Callable[..., Settings],
    namespace: str,
    pg_url: str,
    tmp_path: Path,
    shared_redis: redis.Redis,
    shared_redis_url: str,
) -> Iterator[Settings]:
    """Settings for the machine's servers under this test's namespace; records migrated."""
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
        for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            client.delete(key)
        client.close()


@pytest.fixture
def pipeline_lab(pipeline_settings: Settings) -> Iterator[Lab]:
    """A lab on the machine's servers with the kill switches armed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        lab = tl.connect(pipeline_settings, start=False)
    operator.arm(lab, actor="user:test", reason="pipeline test")
    yield lab
    lab.close()


@pytest.fixture
def embedded_pipeline_lab(settings_factory: Callable[..., Settings]) -> Iterator[Lab]:
    """A lab on an embedded stack owned by this test (stopped at teardown), switches armed."""
    lab = tl.connect(settings_factory(), start=True)
    operator.arm(lab, actor="user:test", reason="pipeline test")
    yield lab
    lab.close()
