"""The one small interface every lake backend implements, and the helpers they share.

A backend moves three things: a query's result (an Arrow table), a command, and an insert of an
Arrow table. Everything else (schema, bars, rollups, gaps, features) lives in `Lake` and is the
same SQL on every backend. Parameters travel in a JSON-safe "wire" form so the gateway can carry
them unchanged; each backend turns them into ClickHouse's `{name:Type}` server-side values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Protocol, runtime_checkable

import pandas as pd
import pyarrow as pa

from tradeos_lab.errors import StoreError, ValidationError

# A wire value: what a bound parameter looks like between Lake, the gateway and a backend.
WireValue = str | int | float | bool | None | list[Any]
WireParams = dict[str, WireValue]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_TABLE = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]{0,127}\.)?[A-Za-z_][A-Za-z0-9_]{0,127}")
# ClickHouse names the error code at the end of its message: "... (BAD_QUERY_PARAMETER)".
_BAD_INPUT_CODES = (
    "BAD_QUERY_PARAMETER",
    "UNKNOWN_QUERY_PARAMETER",
    "CANNOT_PARSE_QUOTED_STRING",
    "CANNOT_PARSE_TEXT",
    "CANNOT_PARSE_DATETIME",
    "CANNOT_PARSE_NUMBER",
)


@runtime_checkable
class LakeBackend(Protocol):
    """Where the lake's SQL runs: chdb in-process, a ClickHouse server, or the lake gateway."""

    name: str

    def query_arrow(self, sql: str, params: WireParams) -> pa.Table:
        """Run a SELECT-like statement and return its rows as an Arrow table."""
        ...

    def command(self, sql: str, params: WireParams) -> None:
        """Run a statement that returns no rows (DDL, INSERT ... SELECT, OPTIMIZE)."""
        ...

    def insert_arrow(self, table: str, data: pa.Table, *, unique: bool = False) -> int:
        """Append `data` (column names = table columns) to `table`; returns the row count.

        `unique=True` promises the rows are unique by the table's key, so the engine may skip
        its on-insert deduplication pass (`optimize_on_insert`).
        """
        ...

    def close(self) -> None:
        """Release the connection; safe to call twice."""
        ...


def check_identifier(name: str, what: str = "column") -> str:
    """A bare ClickHouse identifier we may splice into SQL (values are never spliced)."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValidationError(
            f"{what} name {name!r} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)"
        )
    return name


def check_table(name: str) -> str:
    """A table name, optionally `database.table`, made of plain identifiers."""
    if not isinstance(name, str) or not _TABLE.fullmatch(name):
        raise ValidationError(f"table name {name!r} is not a plain [database.]table identifier")
    return name


def quote_columns(names: Sequence[str]) -> str:
    return ", ".join(f"`{check_identifier(n)}`" for n in names)


def to_wire(params: Mapping[str, Any] | None) -> WireParams:
    """Normalise user parameters to the wire form; timestamps become UTC text."""
    if not params:
        return {}
    if not isinstance(params, Mapping):
        raise ValidationError("params must be a mapping of name -> value")
    return {check_identifier(k, "parameter"): _wire_value(v) for k, v in params.items()}


def _wire_value(value: Any) -> WireValue:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, pd.Timestamp | datetime):
        return format_timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_wire_value(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _wire_value(value.item())
    raise ValidationError(f"cannot bind a parameter of type {type(value).__name__}")


def format_timestamp(value: pd.Timestamp | datetime) -> str:
    """UTC text a `DateTime64(6, 'UTC')` placeholder parses; naive values are taken as UTC."""
    ts = pd.Timestamp(value)
    ts = ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)
    text = ts.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{ts.microsecond:06d}" if ts.microsecond else text


def clickhouse_text(params: WireParams) -> dict[str, str]:
    """Wire values in the text form ClickHouse parses `{name:Type}` values from.

    clickhouse-connect's own encoder is the reference for that form (escaped top-level strings,
    quoted array elements, `\\N` for NULL); chdb parses values the same way, so both use it.
    """
    from clickhouse_connect.driver.binding import format_bind_value

    return {key: str(format_bind_value(value, UTC, True)) for key, value in params.items()}


def translate_engine_error(error: BaseException, what: str) -> Exception:
    """An engine error as ours: bad parameter values are the caller's, the rest the store's."""
    message = str(error).strip() or type(error).__name__
    if any(f"({code})" in message for code in _BAD_INPUT_CODES):
        return ValidationError(f"{what}: {message}")
    return StoreError(f"{what}: {message}")


def arrow_to_ipc(table: pa.Table) -> bytes:
    """An Arrow table as one IPC stream (the gateway's body format)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def ipc_to_arrow(data: bytes | memoryview | pa.Buffer) -> pa.Table:
    try:
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    except pa.ArrowInvalid as e:
        raise ValidationError(f"body is not an Arrow IPC stream: {e}") from e
