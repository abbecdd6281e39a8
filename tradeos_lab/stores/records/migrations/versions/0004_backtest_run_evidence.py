"""Backtest runs keep the evidence of what ran: kind, strategy code hash, data source, engine,
equity curve.

- kind: backtest, sweep or walk_forward (one run record per call);
- strategy_hash: SHA-256 of the strategy class's source, so a changed rule is a different run;
- data_source: where the bars came from (a bar store's class, or a frame);
- engine: the vectorbt engine that simulated (rust or numba);
- equity_curve: the equity per bar as Parquet bytes (ts, equity), compact at 100k bars.

`code_version` stays the package version that ran. Idempotent: columns are added only when
missing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tradeos_lab.stores.records.models import NAMING_CONVENTION

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KIND_CHECK = "ck_backtest_runs_kind"
COLUMNS = (
    ("kind", sa.String(16), {"nullable": False, "server_default": "backtest"}),
    ("strategy_hash", sa.String(64), {}),
    ("data_source", sa.String(256), {}),
    ("engine", sa.String(16), {}),
    ("equity_curve", sa.LargeBinary(), {}),
)


def _columns() -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns("backtest_runs")}


def _checks() -> set[str]:
    inspector = sa.inspect(op.get_bind())
    return {c["name"] for c in inspector.get_check_constraints("backtest_runs")}


def upgrade() -> None:
    present = _columns()
    with op.batch_alter_table("backtest_runs", naming_convention=NAMING_CONVENTION) as batch:
        for name, type_, options in COLUMNS:
            if name not in present:
                batch.add_column(sa.Column(name, type_, **options))
        if KIND_CHECK not in _checks():
            batch.create_check_constraint(
                "kind", "kind IN ('backtest', 'sweep', 'walk_forward')"
            )


def downgrade() -> None:
    present = _columns()
    with op.batch_alter_table("backtest_runs", naming_convention=NAMING_CONVENTION) as batch:
        if KIND_CHECK in _checks():
            batch.drop_constraint(op.f(KIND_CHECK), type_="check")
        for name, _, _ in reversed(COLUMNS):
            if name in present:
                batch.drop_column(name)
