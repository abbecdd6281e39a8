"""Signal horizons indexed for the latest of a strategy at a horizon.

The TCA Monitor scores a strategy over its latest outcomes at one horizon
(`RecordsStore.signal_horizons(strategy=..., horizon_bars=..., latest=N)`) at every run of its
timer. Indexed on (strategy, horizon_bars) only, that read sorts every horizon the strategy ever
had; on (strategy, horizon_bars, signal_at) it reads the latest N in index order. The new index
replaces the old one, a prefix of it.

Idempotent like the others: an index that exists is left alone.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE: Final = "signal_horizons"
OLD: Final = ("ix_signal_horizons_strategy_horizon_bars", ["strategy", "horizon_bars"])
NEW: Final = ("ix_signal_horizons_strategy_horizon_bars_signal_at", [*OLD[1], "signal_at"])


def _indexes() -> set[str]:
    return {i["name"] for i in sa.inspect(op.get_bind()).get_indexes(TABLE) if i["name"]}


def upgrade() -> None:
    if NEW[0] not in _indexes():
        op.create_index(NEW[0], TABLE, NEW[1])
    if OLD[0] in _indexes():
        op.drop_index(OLD[0], TABLE)


def downgrade() -> None:
    if OLD[0] not in _indexes():
        op.create_index(OLD[0], TABLE, OLD[1])
    if NEW[0] in _indexes():
        op.drop_index(NEW[0], TABLE)
