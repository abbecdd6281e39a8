"""Fixtures for provider tests: the local provider server and quick retry settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from provider_servers import ProviderServer

from tradeos_lab.providers import TokenBucket
from tradeos_lab.retry import RetryPolicy


@pytest.fixture
def provider_server() -> Iterator[ProviderServer]:
    server = ProviderServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fast_retry() -> RetryPolicy:
    """Three attempts with millisecond backoff, so fault tests stay quick."""
    return RetryPolicy(attempts=3, base=0.005, cap=0.02)


@pytest.fixture
def unthrottled() -> TokenBucket:
    """A bucket wide enough that paging tests are not paced."""
    return TokenBucket(rate=10_000, capacity=10_000)
