"""Hypertables for the time-series records when TimescaleDB is present; a no-op otherwise.

fills, position_snapshots and signal_outcomes become hypertables on their time column. Their
single-column unique indexes are dropped first (a hypertable's unique indexes must include the
time column); the primary keys already do.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from tradeos_lab.stores.records.timescale import enable_timescaledb, record_hypertable_sql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if not enable_timescaledb(op.get_bind()):
        return
    for statement in record_hypertable_sql():
        op.execute(statement)


def downgrade() -> None:
    # A hypertable cannot be turned back into a plain table in place; downgrading past 0001
    # drops the tables, and upgrading again is idempotent (if_not_exists).
    pass
