"""Intents waiting for an operator's approval: a notional threshold and a TTL per profile.

- policy_profiles.approval_notional (and in policy_profile_versions): an intent whose notional is
  above it is parked for an operator instead of being published; NULL means none waits.
- policy_profiles.approval_ttl_s (and in policy_profile_versions): how long a parked intent waits
  before it is rejected, in seconds.

Conservative (capital preservation) has its larger orders looked at by a human: above half its
largest position (5% of 100,000 starting cash) they wait. Balanced and Aggressive keep trading
unattended, so the demos on the default profile run without an operator.

Idempotent like the others: a column that exists is left alone.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op

from tradeos_lab.stores.records.models import NAMING_CONVENTION

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES: Final = ("policy_profiles", "policy_profile_versions")
DEFAULT_TTL_S: Final = 300.0
#: The seeded thresholds; a profile not named here waits for nobody.
APPROVAL_NOTIONAL: Final = {"Conservative": 2_500.0}


def _has_column(table: str, column: str) -> bool:
    return column in {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    for table in TABLES:
        if not _has_column(table, "approval_notional"):
            op.add_column(table, sa.Column("approval_notional", sa.Double(), nullable=True))
        if not _has_column(table, "approval_ttl_s"):
            op.add_column(
                table,
                sa.Column(
                    "approval_ttl_s",
                    sa.Double(),
                    nullable=False,
                    server_default=sa.text(f"{DEFAULT_TTL_S:g}"),
                ),
            )
    profiles = sa.table(
        "policy_profiles", sa.column("name", sa.String()), sa.column("approval_notional")
    )
    for name, notional in APPROVAL_NOTIONAL.items():
        op.execute(
            profiles.update()
            .where(profiles.c.name == name, profiles.c.approval_notional.is_(None))
            .values(approval_notional=notional)
        )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, naming_convention=NAMING_CONVENTION) as b:
            for column in ("approval_ttl_s", "approval_notional"):
                if _has_column(table, column):
                    b.drop_column(column)
