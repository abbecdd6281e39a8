"""`tradeos-lab records migrate`: the one way besides `up` to create or update a records schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from tradeos_lab.cli import cli
from tradeos_lab.errors import StoreError
from tradeos_lab.settings import Settings
from tradeos_lab.status import collect_status
from tradeos_lab.stores.records import RecordsStore


def _migrate(records_url: str, data_dir: Path) -> str:
    env = {"TRADEOS_RECORDS_URL": records_url, "TRADEOS_DATA_DIR": str(data_dir)}
    result = CliRunner().invoke(cli, ["records", "migrate"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_records_migrate_creates_the_schema_then_is_a_no_op(
    records_url: str, tmp_path: Path
) -> None:
    assert "migrated from empty to revision 0004" in _migrate(records_url, tmp_path)
    assert "already at revision 0004" in _migrate(records_url, tmp_path)
    with RecordsStore.from_url(records_url) as store:
        assert store.current_revision() == "0004"
        assert len(store.profiles()) == 3


def test_records_migrate_moves_an_outdated_schema_to_head(records_url: str, tmp_path: Path) -> None:
    with RecordsStore.from_url(records_url) as store:
        store.upgrade("0002")
    assert "migrated from 0002 to revision 0004" in _migrate(records_url, tmp_path)


@pytest.mark.postgres
def test_notebook_on_a_fresh_postgres_is_told_to_run_records_migrate(pg_url: str) -> None:
    with RecordsStore.from_url(pg_url) as store, pytest.raises(StoreError) as raised:
        store.net_quantity(None, "AAPL")
    assert "tradeos-lab records migrate" in str(raised.value)


def test_outdated_schema_error_names_records_migrate(bare_store: RecordsStore) -> None:
    bare_store.upgrade("0002")
    with pytest.raises(StoreError, match="tradeos-lab records migrate"):
        bare_store.order("ord-1")


@pytest.mark.postgres
def test_status_tells_the_operator_to_run_records_migrate_until_the_schema_is_at_head(
    pg_url: str, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(records_url=pg_url)

    def records_row() -> tuple[str, str]:
        (row,) = [p for p in collect_status(settings).parts if p.part == "records"]
        return row.state, row.detail

    assert records_row() == (
        "degraded",
        "postgresql, no schema yet: run `tradeos-lab records migrate`",
    )
    with RecordsStore.from_url(pg_url) as store:
        store.upgrade("0002")
    state, detail = records_row()
    assert (state, detail) == (
        "degraded",
        "postgresql, migration 0002 of 0004: run `tradeos-lab records migrate`",
    )
    _migrate(pg_url, settings.data_dir)
    assert records_row() == ("up", f"postgresql, migration {RecordsStore.head_revision()}")
