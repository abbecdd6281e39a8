"""The records schema: Alembic migrations on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select, text

from tradeos_lab.errors import DependencyUnavailable, StoreError, ValidationError
from tradeos_lab.settings import Settings
from tradeos_lab.stores.records import (
    Base,
    ConfigChange,
    PolicyProfile,
    RecordsStore,
    SystemConfig,
)

# The schema revision the migrations end at (a new migration moves it).
HEAD = RecordsStore.head_revision()

RECORD_TABLES = {
    "orders",
    "fills",
    "trades",
    "position_snapshots",
    "backtest_runs",
    "policy_profiles",
    "system_config",
    "system_config_history",
    "signal_outcomes",
    "order_events",
    "position_ledger",
    "signals",
    "intents",
    "risk_events",
    "audit",
    "fill_costs",
    "order_costs",
    "signal_horizons",
    "news_articles",
    "news_scores",
    "policy_profile_versions",
    "weight_adjustments",
    "config_proposals",
    "position_totals",
    "fill_totals",
}
ALEMBIC_INI = Path(__file__).parents[2] / "tradeos_lab/stores/records/alembic.ini"


def _tables(store: RecordsStore) -> set[str]:
    return set(inspect(store.engine).get_table_names())


def _seed_counts(store: RecordsStore) -> tuple[int, int, int]:
    with store.session() as s:
        return (
            s.scalar(select(func.count()).select_from(PolicyProfile)) or 0,
            s.scalar(select(func.count()).select_from(SystemConfig)) or 0,
            s.scalar(select(func.count()).select_from(ConfigChange)) or 0,
        )


def test_upgrade_creates_every_records_table_at_head(store: RecordsStore) -> None:
    assert _tables(store) >= RECORD_TABLES
    assert store.current_revision() == HEAD


def test_upgrade_twice_is_a_no_op(store: RecordsStore) -> None:
    store.set_config("hero_signals", ["rsi_14"], changed_by="test", reason="before re-upgrade")
    before = (_tables(store), _seed_counts(store), store.get_config("hero_signals"))
    store.upgrade()
    assert (_tables(store), _seed_counts(store), store.get_config("hero_signals")) == before
    assert store.current_revision() == HEAD


def test_migration_body_rerun_keeps_one_copy_of_tables_and_seeds(store: RecordsStore) -> None:
    """Even with the version table lost, re-running the migrations neither fails nor doubles."""
    before = _seed_counts(store)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
    assert store.current_revision() is None
    store.upgrade()
    assert _seed_counts(store) == before == (3, 3, 3)
    assert store.current_revision() == HEAD


def test_downgrade_to_base_then_upgrade_restores_the_schema(store: RecordsStore) -> None:
    store.record_order(client_order_id="o-1", symbol="AAPL", side="buy", quantity=1)
    store.downgrade("base")
    assert not (RECORD_TABLES & _tables(store))
    assert store.current_revision() is None
    store.upgrade()
    assert _tables(store) >= RECORD_TABLES
    assert [p.name for p in store.profiles()] == ["Conservative", "Balanced", "Aggressive"]
    assert store.record_order(client_order_id="o-1", symbol="AAPL", side="buy", quantity=1)


def test_downgrade_one_step_and_back(store: RecordsStore) -> None:
    store.downgrade("0001")
    assert store.current_revision() == "0001"
    store.upgrade()
    assert store.current_revision() == HEAD


def test_models_match_the_migrated_schema(store: RecordsStore) -> None:
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []


def test_unknown_revision_is_a_validation_error(store: RecordsStore) -> None:
    with pytest.raises(ValidationError, match="nope"):
        store.downgrade("nope")


def test_missing_schema_tells_the_operator_to_upgrade(bare_store: RecordsStore) -> None:
    with pytest.raises(StoreError, match=r"upgrade\(\)"):
        bare_store.profiles()


def test_open_without_records_url_uses_embedded_sqlite_in_data_dir(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    with RecordsStore.open(settings, migrate=True) as store:
        assert (settings.data_dir / "records.db").is_file()
        with store.engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            }
        assert pragma == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 5000}
        assert len(store.profiles()) == 3


@pytest.mark.postgres
def test_open_with_postgres_records_url_uses_psycopg(
    settings_factory: Callable[..., Settings], pg_url: str
) -> None:
    with RecordsStore.open(settings_factory(records_url=pg_url), migrate=True) as store:
        assert store.engine.dialect.name == "postgresql"
        assert store.engine.dialect.driver == "psycopg"
        assert len(store.profiles()) == 3


def test_alembic_command_line_upgrades_and_downgrades(records_url: str) -> None:
    def alembic(*args: str) -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "alembic",
                "-c",
                str(ALEMBIC_INI),
                "-x",
                f"url={records_url}",
                *list(args),
            ],
            capture_output=True,
            text=True,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("TRADEOS_")},
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    alembic("upgrade", "head")
    assert f"{HEAD} (head)" in alembic("current")
    alembic("downgrade", "base")
    with RecordsStore.from_url(records_url) as store:
        assert store.current_revision() is None


def test_unreachable_postgres_is_a_transient_dependency_error() -> None:
    with (
        RecordsStore.from_url("postgresql://postgres@127.0.0.1:1/none") as store,
        pytest.raises(DependencyUnavailable),
    ):
        store.profiles()


def test_upgrade_from_0002_keeps_orders_and_applies_existing_fills_to_the_ledger(
    bare_store: RecordsStore,
) -> None:
    store = bare_store
    store.upgrade("0002")
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO orders (client_order_id, symbol, side, order_type, qty, status, "
                "created_at, updated_at) VALUES ('o-1', 'AAPL', 'sell', 'market', 5, 'filled', "
                ":t, :t), ('o-2', 'AAPL', 'buy', 'limit', 2, 'cancelled', :t, :t)"
            ),
            {"t": "2024-03-01 14:30:00"},
        )
        conn.execute(
            text(
                "INSERT INTO fills (execution_id, filled_at, client_order_id, broker, symbol, "
                "side, qty, price, fee) VALUES ('e-1', :t, 'o-1', 'paper', 'AAPL', 'sell', 5, "
                "100, 0)"
            ),
            {"t": "2024-03-01 14:30:00"},
        )
    store.upgrade()
    filled, canceled = store.order("o-1"), store.order("o-2")
    assert (filled.quantity, filled.filled_quantity, filled.time_in_force) == (5.0, 5.0, "day")
    assert (canceled.status, canceled.filled_quantity) == ("canceled", 0.0)
    assert store.net_quantity(None, "AAPL") == -5.0
    store.downgrade("0002")
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT qty FROM orders ORDER BY id")).scalars().all() == [5, 2]
    assert not {"position_ledger", "order_events", "signals", "audit"} & _tables(store)
    store.upgrade()
    assert store.net_quantity(None, "AAPL") == -5.0


def test_records_use_the_contracts_names_for_shared_concepts(store: RecordsStore) -> None:
    """One name per concept across layers: what a record shares with a message has its name."""
    from tradeos_lab.contracts import Fill as FillPayload
    from tradeos_lab.contracts import Order as OrderPayload
    from tradeos_lab.contracts import PositionUpdate

    def columns(table: str) -> set[str]:
        return {c["name"] for c in inspect(store.engine).get_columns(table)}

    every_column = set().union(*(columns(t) for t in RECORD_TABLES))
    assert not every_column & {"qty", "market_price", "avg_fill_price", "reject_reason"}
    shared = {"quantity", "avg_price", "filled_quantity", "stop_price", "time_in_force", "reason"}
    assert shared <= columns("orders") & set(OrderPayload.model_fields)
    assert {"quantity", "price", "fee"} <= columns("fills") & set(FillPayload.model_fields)
    snapshot = {"quantity", "avg_price", "mark_price", "unrealized_pnl", "realized_pnl"}
    assert snapshot <= columns("position_snapshots") & set(PositionUpdate.model_fields)
