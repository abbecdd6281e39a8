"""TimescaleDB detection: the path is taken only when the server offers the extension.

The machine's PostgreSQL 15 has no TimescaleDB, so the detection must report it absent and the
time-series tables must be plain tables; the statements of the Timescale path are checked as
text (the hypertable conversion itself needs a TimescaleDB server).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from test_pg_bars import make_bars

from tradeos_lab.stores.bars_pg import PostgresBarStore
from tradeos_lab.stores.records import (
    RecordsStore,
    enable_timescaledb,
    timescale,
    timescaledb_available,
    timescaledb_installed,
)
from tradeos_lab.stores.records.store import MIGRATION_LOCK
from tradeos_lab.stores.records.timescale import RECORD_HYPERTABLES, record_hypertable_sql


@pytest.mark.postgres
def test_detection_reports_timescaledb_absent_on_this_server(pg_url: str) -> None:
    with RecordsStore.from_url(pg_url) as store, store.engine.begin() as conn:
        listed = conn.execute(
            text("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
        ).scalar()
        assert listed == 0
        assert timescaledb_available(conn) is False
        assert timescaledb_installed(conn) is False
        assert enable_timescaledb(conn) is False
        # The caller's transaction is intact after the detection.
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_time_series_tables_stay_plain_without_timescaledb(store: RecordsStore) -> None:
    assert store.uses_timescale is False
    indexes = {
        table: {ix["name"] for ix in inspect(store.engine).get_indexes(table)}
        for table, _, _ in RECORD_HYPERTABLES
    }
    assert "uq_fills_execution_id" in indexes["fills"]
    assert "uq_signal_outcomes_signal_id" in indexes["signal_outcomes"]
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as conn:
            kinds = dict(
                conn.execute(
                    text(
                        "SELECT relname, relkind FROM pg_class "
                        "WHERE relname IN ('fills', 'position_snapshots', 'signal_outcomes')"
                    )
                ).all()
            )
        assert kinds == {"fills": "r", "position_snapshots": "r", "signal_outcomes": "r"}


def test_timescale_path_makes_hypertables_of_the_time_series_tables() -> None:
    statements = record_hypertable_sql()
    hypertables = [s for s in statements if s.startswith("SELECT create_hypertable(")]
    assert [s.split("'")[1:4:2] for s in hypertables] == [
        ["fills", "filled_at"],
        ["position_snapshots", "snapshot_at"],
        ["signal_outcomes", "signal_at"],
    ]
    assert all("if_not_exists => TRUE" in s and "migrate_data => TRUE" in s for s in hypertables)
    # Unique indexes without the time column are dropped before the conversion, not after.
    drops = [s for s in statements if s.startswith("DROP INDEX")]
    assert drops == [
        "DROP INDEX IF EXISTS uq_fills_execution_id",
        "DROP INDEX IF EXISTS uq_signal_outcomes_signal_id",
    ]
    assert statements.index(drops[0]) < statements.index(hypertables[0])


def test_detection_reports_absent_on_sqlite(tmp_path: Path) -> None:
    with RecordsStore.from_url(f"sqlite:///{tmp_path / 'r.db'}") as store:
        store.upgrade()
        with store.engine.begin() as conn:
            assert timescaledb_available(conn) is False
            assert enable_timescaledb(conn) is False
        assert store.uses_timescale is False


@pytest.mark.postgres
def test_probe_backend_ending_leaves_the_records_and_bar_store_connections_working(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On a server that lists TimescaleDB without preloading it, `CREATE EXTENSION` ends its
    backend. Here the probe does the same to itself (`pg_terminate_backend` of its own pid), for
    an extension this server really lists and has not installed (hstore), so the detection runs
    for real; the migrations and the bar store must fall back to plain tables on connections
    that keep working."""
    monkeypatch.setattr(timescale, "EXTENSION", "hstore")
    monkeypatch.setattr(
        timescale, "ENABLE_STATEMENT", "SELECT pg_terminate_backend(pg_backend_pid())"
    )
    caplog.set_level(logging.WARNING, logger=timescale.__name__)
    with RecordsStore.from_url(pg_url) as store:
        store.upgrade()
        assert store.current_revision() == "0004"
        assert store.uses_timescale is False
        assert store.record_order(client_order_id="o-1", symbol="AAPL", side="buy", quantity=3)
        assert store.order("o-1").quantity == 3.0
    assert any("terminating connection" in r.getMessage() for r in caplog.records)

    caplog.clear()
    engine = create_engine(pg_url)
    try:
        bars = PostgresBarStore(engine)
        assert bars.mode == "native"
        frame = make_bars("AAPL", n=10)
        assert bars.write_bars(frame) == 10
        assert len(bars.read_bars("AAPL", "1m")) == 10
    finally:
        engine.dispose()
    assert any("terminating connection" in r.getMessage() for r in caplog.records)


@pytest.mark.postgres
def test_probe_waiting_on_a_lock_the_caller_holds_fails_instead_of_hanging(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The migration waits for the probe in Python, where PostgreSQL sees no deadlock; a probe
    that needs a lock the migration holds (here its advisory lock) gives up after the lock
    timeout and the schema is built on plain tables."""
    monkeypatch.setattr(timescale, "EXTENSION", "hstore")
    monkeypatch.setattr(timescale, "PROBE_LOCK_TIMEOUT_MS", 200)
    monkeypatch.setattr(
        timescale, "ENABLE_STATEMENT", f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"
    )
    with RecordsStore.from_url(pg_url) as store:
        store.upgrade()
        assert store.current_revision() == "0004"
        assert store.uses_timescale is False
