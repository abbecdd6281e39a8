"""Records schema: orders, fills, trades, positions, backtests, profiles, config, signal outcomes.

Idempotent: a table that already exists is left alone and seed rows are only added when absent,
so the body can run again safely (for instance after the version table was lost).

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from tradeos_lab.stores.records.sqltypes import BigId, JSONDoc, UTCDateTime

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIDE = "side IN ('buy', 'sell')"

# Documented on PolicyProfile. Percentages are in percent; confidence is 0-1.
PROFILES: list[dict[str, Any]] = [
    {
        "name": "Conservative",
        "description": "Capital preservation: small positions, no leverage, early daily stop.",
        "max_position_pct": 5.0,
        "max_daily_loss_pct": 1.0,
        "max_leverage": 1.0,
        "risk_per_trade_pct": 0.25,
        "max_open_positions": 5,
        "max_drawdown_pct": 5.0,
        "min_signal_confidence": 0.75,
    },
    {
        "name": "Balanced",
        "description": "The default: moderate sizing and leverage for a diversified book.",
        "max_position_pct": 10.0,
        "max_daily_loss_pct": 2.0,
        "max_leverage": 2.0,
        "risk_per_trade_pct": 0.5,
        "max_open_positions": 10,
        "max_drawdown_pct": 10.0,
        "min_signal_confidence": 0.6,
    },
    {
        "name": "Aggressive",
        "description": "Growth: larger positions and leverage, accepts deeper drawdowns.",
        "max_position_pct": 20.0,
        "max_daily_loss_pct": 5.0,
        "max_leverage": 4.0,
        "risk_per_trade_pct": 1.0,
        "max_open_positions": 20,
        "max_drawdown_pct": 20.0,
        "min_signal_confidence": 0.5,
    },
]

# Live-tunable keys the autonomous agent and the dashboards change at run time.
CONFIG: dict[str, Any] = {
    "active_policy_profile": "Balanced",
    "hero_signals": [],
    "signal_confidence_threshold": 0.6,
}

TABLES = (
    "signal_outcomes",
    "system_config_history",
    "system_config",
    "policy_profiles",
    "backtest_runs",
    "position_snapshots",
    "trades",
    "fills",
    "orders",
)


def _create(name: str, *elements: Any) -> bool:
    if sa.inspect(op.get_bind()).has_table(name):
        return False
    op.create_table(name, *elements)
    return True


def upgrade() -> None:
    if _create(
        "orders",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("broker_order_id", sa.String(64), nullable=True),
        sa.Column("intent_id", sa.String(64), nullable=True),
        sa.Column("correlation_id", sa.String(64), nullable=True),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("order_type", sa.String(16), nullable=False),
        sa.Column("qty", sa.Double(), nullable=False),
        sa.Column("limit_price", sa.Double(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.UniqueConstraint("client_order_id", name="uq_orders_client_order_id"),
        sa.CheckConstraint(SIDE, name="ck_orders_side"),
    ):
        op.create_index("ix_orders_correlation_id", "orders", ["correlation_id"])

    if _create(
        "fills",
        sa.Column("execution_id", sa.String(64), nullable=False),
        sa.Column("filled_at", UTCDateTime(), nullable=False),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("broker", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("qty", sa.Double(), nullable=False),
        sa.Column("price", sa.Double(), nullable=False),
        sa.Column("fee", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "filled_at", name="pk_fills"),
        sa.ForeignKeyConstraint(
            ["client_order_id"],
            ["orders.client_order_id"],
            name="fk_fills_client_order_id_orders",
        ),
        sa.CheckConstraint(SIDE, name="ck_fills_side"),
    ):
        op.create_index("uq_fills_execution_id", "fills", ["execution_id"], unique=True)
        op.create_index("ix_fills_client_order_id", "fills", ["client_order_id"])

    if _create(
        "trades",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("correlation_id", sa.String(64), nullable=False),
        sa.Column("market_data_message_id", sa.String(64), nullable=True),
        sa.Column("raw_signal_id", sa.String(64), nullable=True),
        sa.Column("modified_signal_id", sa.String(64), nullable=True),
        sa.Column("intent_id", sa.String(64), nullable=True),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("execution_id", sa.String(64), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=True),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("qty", sa.Double(), nullable=False),
        sa.Column("price", sa.Double(), nullable=False),
        sa.Column("executed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trades"),
        sa.UniqueConstraint("execution_id", name="uq_trades_execution_id"),
        sa.ForeignKeyConstraint(
            ["client_order_id"],
            ["orders.client_order_id"],
            name="fk_trades_client_order_id_orders",
        ),
        sa.CheckConstraint(SIDE, name="ck_trades_side"),
    ):
        op.create_index("ix_trades_correlation_id", "trades", ["correlation_id"])
        op.create_index("ix_trades_raw_signal_id", "trades", ["raw_signal_id"])
        op.create_index("ix_trades_client_order_id", "trades", ["client_order_id"])

    _create(
        "position_snapshots",
        sa.Column("snapshot_at", UTCDateTime(), nullable=False),
        sa.Column("account", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("qty", sa.Double(), nullable=False),
        sa.Column("avg_price", sa.Double(), nullable=False),
        sa.Column("market_price", sa.Double(), nullable=True),
        sa.Column("unrealized_pnl", sa.Double(), nullable=True),
        sa.Column("realized_pnl", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("snapshot_at", "account", "symbol", name="pk_position_snapshots"),
    )

    if _create(
        "backtest_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("strategy", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("parameters", JSONDoc, nullable=False),
        sa.Column("results", JSONDoc, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("data_start", UTCDateTime(), nullable=False),
        sa.Column("data_end", UTCDateTime(), nullable=False),
        sa.Column("data_hash", sa.String(128), nullable=False),
        sa.Column("code_version", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_backtest_runs"),
        sa.CheckConstraint(
            "state IN ('pending', 'running', 'succeeded', 'failed')", name="ck_backtest_runs_state"
        ),
    ):
        op.create_index("ix_backtest_runs_strategy", "backtest_runs", ["strategy"])

    _create(
        "policy_profiles",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("max_position_pct", sa.Double(), nullable=False),
        sa.Column("max_daily_loss_pct", sa.Double(), nullable=False),
        sa.Column("max_leverage", sa.Double(), nullable=False),
        sa.Column("risk_per_trade_pct", sa.Double(), nullable=False),
        sa.Column("max_open_positions", sa.Integer(), nullable=False),
        sa.Column("max_drawdown_pct", sa.Double(), nullable=False),
        sa.Column("min_signal_confidence", sa.Double(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_policy_profiles"),
    )

    _create(
        "system_config",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", JSONDoc, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_system_config"),
    )

    if _create(
        "system_config_history",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("old_value", JSONDoc, nullable=True),
        sa.Column("new_value", JSONDoc, nullable=False),
        sa.Column("changed_by", sa.String(64), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_system_config_history"),
    ):
        op.create_index("ix_system_config_history_key", "system_config_history", ["key"])

    if _create(
        "signal_outcomes",
        sa.Column("signal_id", sa.String(64), nullable=False),
        sa.Column("signal_at", UTCDateTime(), nullable=False),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("execution_id", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("slippage_bps", sa.Double(), nullable=True),
        sa.Column("pnl", sa.Double(), nullable=True),
        sa.Column("holding_seconds", sa.Double(), nullable=True),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("signal_id", "signal_at", name="pk_signal_outcomes"),
        sa.CheckConstraint(
            "outcome IN ('win', 'loss', 'flat', 'unfilled', 'expired')",
            name="ck_signal_outcomes_outcome",
        ),
    ):
        op.create_index(
            "uq_signal_outcomes_signal_id", "signal_outcomes", ["signal_id"], unique=True
        )

    _seed()


def _seed() -> None:
    bind = op.get_bind()
    now = datetime.now(UTC)
    profiles = sa.table(
        "policy_profiles",
        *(sa.column(k) for k in PROFILES[0]),
        sa.column("updated_at", UTCDateTime()),
    )
    present = set(bind.execute(sa.select(profiles.c.name)).scalars())
    missing = [{**p, "updated_at": now} for p in PROFILES if p["name"] not in present]
    if missing:
        op.bulk_insert(profiles, missing)

    config = sa.table(
        "system_config",
        sa.column("key", sa.String()),
        sa.column("value", JSONDoc),
        sa.column("updated_at", UTCDateTime()),
        sa.column("updated_by", sa.String()),
    )
    history = sa.table(
        "system_config_history",
        sa.column("key", sa.String()),
        sa.column("old_value", JSONDoc),
        sa.column("new_value", JSONDoc),
        sa.column("changed_by", sa.String()),
        sa.column("changed_at", UTCDateTime()),
        sa.column("reason", sa.String()),
    )
    present = set(bind.execute(sa.select(config.c.key)).scalars())
    new = {k: v for k, v in CONFIG.items() if k not in present}
    if new:
        by = f"migration {revision}"
        op.bulk_insert(
            config,
            [{"key": k, "value": v, "updated_at": now, "updated_by": by} for k, v in new.items()],
        )
        op.bulk_insert(
            history,
            [
                {
                    "key": k,
                    "old_value": None,
                    "new_value": v,
                    "changed_by": by,
                    "changed_at": now,
                    "reason": "initial value",
                }
                for k, v in new.items()
            ],
        )


def downgrade() -> None:
    bind = op.get_bind()
    for name in TABLES:  # children before parents, for the foreign keys
        if sa.inspect(bind).has_table(name):
            op.drop_table(name)
