"""Orders indexed by status, symbol and strategy, for the working orders.

The paper broker reads a symbol's working orders on each new bar and Feasibility a strategy's
working orders in a symbol on each batch. Without an index on the status those reads scanned
every order ever recorded (or every order of the strategy), so they slowed as the history grew;
on (status, symbol, strategy) they read the working orders only.

Idempotent like the others: an index that exists is left alone.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE: Final = "orders"
INDEX: Final = ("ix_orders_status_symbol_strategy", ["status", "symbol", "strategy"])


def _indexes() -> set[str]:
    return {i["name"] for i in sa.inspect(op.get_bind()).get_indexes(TABLE) if i["name"]}


def upgrade() -> None:
    if INDEX[0] not in _indexes():
        op.create_index(INDEX[0], TABLE, INDEX[1])


def downgrade() -> None:
    if INDEX[0] in _indexes():
        op.drop_index(INDEX[0], TABLE)
