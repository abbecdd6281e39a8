"""A ClickHouse server through clickhouse-connect (HTTP), for `lake_url = http(s)://...`.

`clickhouse://` and `clickhouses://` are accepted as spellings of http and https, since
clickhouse-connect speaks ClickHouse's HTTP interface only. The URL's path names the database.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from tradeos_lab.errors import DependencyUnavailable, StoreError
from tradeos_lab.secrets import redact_url
from tradeos_lab.stores.lake.backend import (
    WireParams,
    check_table,
    translate_engine_error,
)

_SCHEMES = {"http": "http", "https": "https", "clickhouse": "http", "clickhouses": "https"}


class ClickHouseServerBackend:
    """The lake on a ClickHouse server; server-side `{name:Type}` binding for every value."""

    name = "clickhouse"

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import ClickHouseError

        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise StoreError(f"{redact_url(url)} is not an http(s) or clickhouse(s) URL")
        self._shown = redact_url(url)
        dsn = urlunsplit((_SCHEMES[parts.scheme], *parts[1:]))
        try:
            self._client: Any = clickhouse_connect.get_client(
                dsn=dsn,
                interface=_SCHEMES[parts.scheme],
                connect_timeout=connect_timeout,
                autogenerate_session_id=False,
            )
        except ClickHouseError as e:
            raise DependencyUnavailable(
                f"the ClickHouse server at {self._shown} does not answer: {type(e).__name__}"
            ) from e
        self._errors: tuple[type[BaseException], ...] = (ClickHouseError,)
        self._lock = threading.Lock()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from clickhouse_connect.driver.exceptions import OperationalError

        with self._lock:
            try:
                return fn(*args, **kwargs)
            except OperationalError as e:
                raise DependencyUnavailable(
                    f"the ClickHouse server at {self._shown} does not answer: {e}"
                ) from e
            except self._errors as e:
                raise translate_engine_error(e, what) from e

    def query_arrow(self, sql: str, params: WireParams) -> pa.Table:
        table = self._call(
            "lake query failed",
            self._client.query_arrow,
            sql,
            parameters=params or None,
            use_strings=True,
        )
        return table if isinstance(table, pa.Table) else pa.table({})

    def command(self, sql: str, params: WireParams) -> None:
        self._call("lake command failed", self._client.command, sql, parameters=params or None)

    def insert_arrow(self, table: str, data: pa.Table, *, unique: bool = False) -> int:
        check_table(table)
        if data.num_rows == 0:
            return 0
        settings = {"optimize_on_insert": 0} if unique else None
        self._call(
            f"insert into {table} failed",
            self._client.insert_arrow,
            table,
            data,
            settings=settings,
        )
        return int(data.num_rows)

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"ClickHouseServerBackend({self._shown!r})"
