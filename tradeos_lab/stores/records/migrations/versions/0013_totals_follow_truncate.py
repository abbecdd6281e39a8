"""The running totals emptied with their rows by TRUNCATE (PostgreSQL).

The row triggers of 0012 keep `position_totals` and `fill_totals` on every insert, update and
delete, but PostgreSQL fires no row trigger for TRUNCATE: a truncated `position_ledger` or
`fills` left its totals behind, and every position read after it was wrong. A statement trigger
on each source table now empties its totals table in the same transaction. SQLite has no
TRUNCATE (its `DELETE FROM` without a WHERE fires the row triggers).

Idempotent like the others: the function is replaced and the trigger dropped before it is made.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Each source table and the totals table its rows add up to.
SOURCES: Final = (("position_ledger", "position_totals"), ("fills", "fill_totals"))


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgresql():
        return
    for source, totals in SOURCES:
        op.execute(
            f"CREATE OR REPLACE FUNCTION {totals}_truncate() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN DELETE FROM {totals}; RETURN NULL; END $$"
        )
        op.execute(f"DROP TRIGGER IF EXISTS {totals}_truncate ON {source}")
        op.execute(
            f"CREATE TRIGGER {totals}_truncate AFTER TRUNCATE ON {source} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {totals}_truncate()"
        )


def downgrade() -> None:
    if not _postgresql():
        return
    for source, totals in SOURCES:
        op.execute(f"DROP TRIGGER IF EXISTS {totals}_truncate ON {source}")
        op.execute(f"DROP FUNCTION IF EXISTS {totals}_truncate()")
