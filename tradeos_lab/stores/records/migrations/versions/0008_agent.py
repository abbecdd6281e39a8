"""The agent and the learning loop: agent rules per profile, profile versions, weight
adjustments and config proposals.

- policy_profiles.agent_rules: the agent's rules and their limits for this profile (JSON; NULL
  means the defaults of `tradeos_lab.agent.rules.AgentRules`).
- policy_profile_versions: every version of a profile, effective-dated; a version with no
  effective date is a candidate, replayed before it is activated.
- weight_adjustments: every change of the Signal Modifier's ensemble weights by the learning
  loop, with the weights before and after and the evidence behind it.
- config_proposals: system config changes proposed by the agent, pending an operator's approval
  where the active profile asks for it, then applied or rejected.

Idempotent like the others: a table or column that exists is left alone.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tradeos_lab.stores.records.models import NAMING_CONVENTION
from tradeos_lab.stores.records.sqltypes import BigId, JSONDoc, UTCDateTime

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROPOSAL_STATUS = "status IN ('pending', 'applied', 'rejected')"
NEW_TABLES = ("config_proposals", "weight_adjustments", "policy_profile_versions")


def _has_table(name: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(name)


def _has_column(table: str, column: str) -> bool:
    return column in {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    if not _has_column("policy_profiles", "agent_rules"):
        op.add_column("policy_profiles", sa.Column("agent_rules", JSONDoc, nullable=True))
    if not _has_table("policy_profile_versions"):
        op.create_table(
            "policy_profile_versions",
            sa.Column("name", sa.String(32), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("description", sa.Text(), nullable=False),
            sa.Column("max_position_pct", sa.Double(), nullable=False),
            sa.Column("max_daily_loss_pct", sa.Double(), nullable=False),
            sa.Column("max_leverage", sa.Double(), nullable=False),
            sa.Column("risk_per_trade_pct", sa.Double(), nullable=False),
            sa.Column("max_open_positions", sa.Integer(), nullable=False),
            sa.Column("max_drawdown_pct", sa.Double(), nullable=False),
            sa.Column("min_signal_confidence", sa.Double(), nullable=False),
            sa.Column("agent_rules", JSONDoc, nullable=True),
            sa.Column("effective_from", UTCDateTime(), nullable=True),
            sa.Column("created_by", sa.String(64), nullable=False),
            sa.Column("created_at", UTCDateTime(), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("name", "version", name="pk_policy_profile_versions"),
        )
    if not _has_table("weight_adjustments"):
        op.create_table(
            "weight_adjustments",
            sa.Column("id", BigId, primary_key=True, autoincrement=True),
            sa.Column("adjusted_at", UTCDateTime(), nullable=False),
            sa.Column("method", sa.String(32), nullable=False),
            sa.Column("before", JSONDoc, nullable=False),
            sa.Column("after", JSONDoc, nullable=False),
            sa.Column("evidence", JSONDoc, nullable=False),
            sa.Column("applied", sa.Boolean(), nullable=False),
        )
        op.create_index(
            "ix_weight_adjustments_adjusted_at", "weight_adjustments", ["adjusted_at"]
        )
    if not _has_table("config_proposals"):
        op.create_table(
            "config_proposals",
            sa.Column("id", BigId, primary_key=True, autoincrement=True),
            sa.Column("key", sa.String(64), nullable=False),
            sa.Column("old_value", JSONDoc, nullable=True),
            sa.Column("new_value", JSONDoc, nullable=False),
            sa.Column("proposed_by", sa.String(64), nullable=False),
            sa.Column("proposed_at", UTCDateTime(), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("decided_by", sa.String(64), nullable=True),
            sa.Column("decided_at", UTCDateTime(), nullable=True),
            sa.CheckConstraint(PROPOSAL_STATUS, name="ck_config_proposals_status"),
        )
        op.create_index("ix_config_proposals_status", "config_proposals", ["status"])


def downgrade() -> None:
    for table in NEW_TABLES:
        if _has_table(table):
            op.drop_table(table)
    if _has_column("policy_profiles", "agent_rules"):
        with op.batch_alter_table("policy_profiles", naming_convention=NAMING_CONVENTION) as b:
            b.drop_column("agent_rules")
