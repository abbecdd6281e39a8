"""Lake fixtures: a real lake per test on each backend, and a realistic bar generator.

- `lake`: the embedded lake (chdb) in this test's tmp directory.
- `any_lake`: the same behaviour on every backend: embedded chdb, the lake gateway (a client
  `Lake` talking HTTP to an owner `Lake` in this process), and a ClickHouse server when
  TRADEOS_TEST_CLICKHOUSE_URL is set (a fresh database per test, dropped afterwards).

chdb allows one data directory per process, so every fixture closes its lake at teardown.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from lake_helpers import CLICKHOUSE_URL, NO_SERVER, drop_server_lake, server_lake_for

from tradeos_lab.settings import Settings
from tradeos_lab.stores.lake import Lake, serve_gateway


@pytest.fixture
def lake_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
def lake(lake_settings: Settings) -> Iterator[Lake]:
    with Lake.open(lake_settings) as opened:
        yield opened


@pytest.fixture
def gateway_pair(lake_settings: Settings) -> Iterator[tuple[Lake, Lake]]:
    """(owner, client): the owner's embedded lake and a client `Lake` over its gateway."""
    token = secrets.token_urlsafe(24)
    with Lake.open(lake_settings) as owner:
        server = serve_gateway(owner, token)
        client = Lake.over_gateway(server.url, token)
        try:
            yield owner, client
        finally:
            client.close()
            server.shutdown()


@pytest.fixture
def server_lake() -> Iterator[Lake]:
    """A lake on the ClickHouse server, in a database of its own."""
    if not CLICKHOUSE_URL:
        pytest.skip(NO_SERVER)
    lake = server_lake_for(CLICKHOUSE_URL)
    try:
        yield lake
    finally:
        drop_server_lake(lake)


@pytest.fixture(params=["chdb", "gateway", "server"])
def any_lake(request: pytest.FixtureRequest) -> Lake:
    """One lake per backend; the same test proves the same behaviour on each."""
    kind: Any = request.param
    if kind == "chdb":
        return request.getfixturevalue("lake")  # type: ignore[no-any-return]
    if kind == "gateway":
        return request.getfixturevalue("gateway_pair")[1]  # type: ignore[no-any-return]
    return request.getfixturevalue("server_lake")  # type: ignore[no-any-return]
