"""TimescaleDB detection, shared by the records migrations and the Postgres bar store.

The Timescale path is taken only when the server lists the extension in
`pg_available_extensions` and `CREATE EXTENSION` succeeds; otherwise everything stays plain
PostgreSQL and nothing fails.

`CREATE EXTENSION` runs on a short-lived connection of its own: on a server where the extension
is installed but not in `shared_preload_libraries`, the statement ends its backend, and on the
caller's connection that would invalidate the records' and the bar store's connection for every
statement after it.
"""

from __future__ import annotations

import logging

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

EXTENSION = "timescaledb"
ENABLE_STATEMENT = f"CREATE EXTENSION IF NOT EXISTS {EXTENSION}"
PROBE_APPLICATION_NAME = "tradeos-lab timescaledb probe"
PROBE_LOCK_TIMEOUT_MS = 10_000

# Time-series records: (table, time column, unique index that a hypertable cannot keep).
RECORD_HYPERTABLES: tuple[tuple[str, str, str | None], ...] = (
    ("fills", "filled_at", "uq_fills_execution_id"),
    ("position_snapshots", "snapshot_at", None),
    ("signal_outcomes", "signal_at", "uq_signal_outcomes_signal_id"),
)


def timescaledb_available(conn: Connection) -> bool:
    """True when the server could install TimescaleDB (it is in `pg_available_extensions`)."""
    if conn.dialect.name != "postgresql":
        return False
    found = conn.execute(
        text("SELECT 1 FROM pg_available_extensions WHERE name = :name"), {"name": EXTENSION}
    ).first()
    return found is not None


def timescaledb_installed(conn: Connection) -> bool:
    """True when TimescaleDB is installed in this database."""
    if conn.dialect.name != "postgresql":
        return False
    found = conn.execute(
        text("SELECT 1 FROM pg_extension WHERE extname = :name"), {"name": EXTENSION}
    ).first()
    return found is not None


def enable_timescaledb(conn: Connection) -> bool:
    """Install TimescaleDB when the server offers it; False (never an error) when it cannot.

    `conn` only reads the catalogs. `CREATE EXTENSION` is committed on a connection of its own
    (no pool), so a server that lists the extension without preloading it (the statement ends
    that backend) or a role without the privilege leaves `conn` and its transaction intact.
    """
    if timescaledb_installed(conn):
        return True
    if not timescaledb_available(conn):
        return False
    probe = create_engine(
        conn.engine.url,
        poolclass=NullPool,
        # The caller waits on the probe in Python, where PostgreSQL cannot see a deadlock: a lock
        # the probe cannot get soon is a failed probe, not a hang.
        connect_args={
            "application_name": PROBE_APPLICATION_NAME,
            "options": f"-c lock_timeout={PROBE_LOCK_TIMEOUT_MS}",
        },
    )
    try:
        with probe.connect().execution_options(isolation_level="AUTOCOMMIT") as own:
            own.execute(text(ENABLE_STATEMENT))
    except DBAPIError as e:
        log.warning("TimescaleDB is listed but cannot be enabled, using plain tables: %s", e.orig)
        return False
    finally:
        probe.dispose()
    return timescaledb_installed(conn)


def record_hypertable_sql(chunk_interval: str = "30 days") -> list[str]:
    """Statements that turn the time-series record tables into hypertables (idempotent)."""
    statements: list[str] = []
    for table, time_column, unique_index in RECORD_HYPERTABLES:
        if unique_index:
            statements.append(f"DROP INDEX IF EXISTS {unique_index}")
        statements.append(
            f"SELECT create_hypertable('{table}', '{time_column}', "
            f"chunk_time_interval => INTERVAL '{chunk_interval}', "
            "if_not_exists => TRUE, migrate_data => TRUE)"
        )
    return statements
