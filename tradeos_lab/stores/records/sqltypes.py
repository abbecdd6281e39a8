"""Column types that behave the same on SQLite and PostgreSQL.

Migrations import these, so they must stay backwards compatible: change a type by adding a new one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from tradeos_lab.errors import ValidationError

# BIGINT identities on PostgreSQL; SQLite only auto-increments a column declared INTEGER.
BigId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")

# JSONB on PostgreSQL (indexable, compact); JSON text on SQLite. None is stored as SQL NULL.
JSONDoc: TypeEngine[Any] = JSON(none_as_null=True).with_variant(
    JSONB(none_as_null=True), "postgresql"
)


class JSONText(str):
    """A JSON document serialised already (a message payload by pydantic, which writes it in a
    third of the time `json.dumps` takes for the dict), stored as it is in a `JSONDoc` column."""


def json_document(value: Any) -> str:
    """The records' JSON serializer (the engines' `json_serializer`): `JSONText` as it is,
    anything else by `json.dumps`."""
    return value if isinstance(value, JSONText) else json.dumps(value)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always tz-aware UTC in Python, whatever the backend stores.

    SQLite has no time zones, so values are stored as naive UTC there and made aware on the way
    out; naive input is refused because its zone would be a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = _as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, `process_bind_param` and then the text SQLite stores, in one step: the
        records' bulk writes send many timestamps for every fill. Wherever the one step would
        store other text than the two (another storage format), the two."""
        both = super().bind_processor(dialect)
        if dialect.name != "sqlite" or both is None:
            return both

        def process(value: datetime | None) -> Any:
            if value.__class__ is not datetime:  # None, or a subclass (e.g. a pandas Timestamp)
                return both(value)
            assert value is not None
            if value.tzinfo is not UTC:
                value = _as_utc(value)
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")

        sample = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
        same = all(process(v) == both(v) for v in (sample, sample.replace(microsecond=7)))
        return process if same else both

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _as_utc(value: datetime) -> datetime:
    """An aware timestamp in UTC; a naive one is refused."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"timestamp {value.isoformat()} has no time zone; pass UTC")
    return value.astimezone(UTC)
