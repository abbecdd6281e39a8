"""The ClickHouse server backend. Its behaviour tests are the `any_lake[server]` cases of every
lake test module (they run when TRADEOS_TEST_CLICKHOUSE_URL is set); these need no server."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from tradeos_lab.errors import DependencyUnavailable
from tradeos_lab.settings import Settings
from tradeos_lab.stores.lake import Lake


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("scheme", ["http", "clickhouse"])
def test_an_unreachable_server_is_unavailable_and_its_password_never_shown(
    settings_factory: Callable[..., Settings], scheme: str
) -> None:
    url = f"{scheme}://lab:s3cret-pw-42@127.0.0.1:{free_port()}/lake"

    with pytest.raises(DependencyUnavailable) as refused:
        Lake.open(settings_factory(lake_url=url))

    assert "s3cret-pw-42" not in str(refused.value)
    assert "127.0.0.1" in str(refused.value)
