"""Reconciliation: orders and fills the records learned from the broker are marked `external`.

- orders.external: an order found at the broker that Execution never placed.
- fills.external: an execution imported from the broker's report, not reported through
  Execution (a fill of an external order, or one the records missed).

Both default to false, so every row written before stays what it was. Idempotent like the
others: a column that exists is left alone.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tradeos_lab.stores.records.models import NAMING_CONVENTION

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("orders", "fills")


def _has_column(table: str, column: str) -> bool:
    return column in {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    for table in TABLES:
        if not _has_column(table, "external"):
            op.add_column(
                table,
                sa.Column("external", sa.Boolean(), nullable=False, server_default=sa.false()),
            )


def downgrade() -> None:
    for table in TABLES:
        if _has_column(table, "external"):
            with op.batch_alter_table(table, naming_convention=NAMING_CONVENTION) as batch:
                batch.drop_column("external")
