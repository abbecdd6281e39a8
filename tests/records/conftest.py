"""Fixtures of the records and Postgres bar store tests: every test runs on a store of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tradeos_lab.stores.records import RecordsStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def records_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on the embedded SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def bare_store(records_url: str) -> Iterator[RecordsStore]:
    """A store on an empty database (no migrations applied)."""
    store = RecordsStore.from_url(records_url)
    yield store
    store.close()


@pytest.fixture
def store(bare_store: RecordsStore) -> RecordsStore:
    """A store with the schema at head."""
    bare_store.upgrade()
    return bare_store
