"""The running totals follow a TRUNCATE of their rows (PostgreSQL).

The row triggers of 0012 keep `position_totals` and `fill_totals` on every insert, update and
delete, but PostgreSQL fires no row trigger for TRUNCATE: a truncated `position_ledger` or
`fills` left its totals behind, and every position read after it was wrong. A statement trigger
on each source table now recomputes its totals from the rows left, in the same transaction, as
0012's backfill does: after a whole table's TRUNCATE that empties them, and on TimescaleDB,
where the trigger is also on every chunk of `fills`, a truncated chunk takes out only its own
fills. SQLite has no TRUNCATE (its `DELETE FROM` without a WHERE fires the row triggers).

Idempotent like the others: the function is replaced and the trigger dropped before it is made.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _totals_migration() -> ModuleType:
    """Migration 0012, where the totals, their source rows and their backfill are defined."""
    path = Path(__file__).with_name("0012_ledger_and_fill_totals.py")
    spec = importlib.util.spec_from_file_location("records_migration_0012", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgresql():
        return
    totals = _totals_migration()
    for t in totals.TOTALS:
        recompute = "; ".join(totals._backfill_sql(t))
        op.execute(
            f"CREATE OR REPLACE FUNCTION {t.table}_truncate() RETURNS trigger LANGUAGE plpgsql "
            f"AS $$ BEGIN {recompute}; RETURN NULL; END $$"
        )
        op.execute(f"DROP TRIGGER IF EXISTS {t.table}_truncate ON {t.source}")
        op.execute(
            f"CREATE TRIGGER {t.table}_truncate AFTER TRUNCATE ON {t.source} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {t.table}_truncate()"
        )


def downgrade() -> None:
    if not _postgresql():
        return
    for t in _totals_migration().TOTALS:
        op.execute(f"DROP TRIGGER IF EXISTS {t.table}_truncate ON {t.source}")
        op.execute(f"DROP FUNCTION IF EXISTS {t.table}_truncate()")
