"""Fixtures for broker tests: the local Alpaca trading server and the flags tier on real Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from alpaca_trading_server import AlpacaTradingServer

from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.tiers.flags import Flags


@pytest.fixture
def alpaca_server() -> Iterator[AlpacaTradingServer]:
    server = AlpacaTradingServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def flags(
    shared_redis: redis.Redis, keys: Keys, settings_factory: Callable[..., Settings]
) -> Flags:
    """The flags tier (rate limits, breakers) on the machine's Redis, under this test's keys."""
    return Flags(shared_redis, keys=keys, settings=settings_factory())
