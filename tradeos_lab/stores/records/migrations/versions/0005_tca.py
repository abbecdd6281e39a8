"""Transaction cost analysis: fill costs (with shadow fills), order shortfalls, signal horizons.

- fill_costs: one row per broker execution id: the fill against its arrival price (slippage in
  bps) and, for a real venue's fill, the paper fill model's shadow of it.
- order_costs: one row per client order id: the order's implementation shortfall and its parts.
- signal_horizons: one row per (signal, horizon in bars): open until the horizon's bar is known,
  then its forward return and P&L (or expired).

Idempotent like the others: a table that exists is left alone.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from tradeos_lab.contracts.types import CLIENT_ORDER_ID_MAX_LENGTH
from tradeos_lab.stores.records.sqltypes import UTCDateTime

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIDE = "side IN ('buy', 'sell')"
HORIZON_STATUS = "status IN ('open', 'done', 'expired')"
NEW_TABLES = ("signal_horizons", "order_costs", "fill_costs")


def _has_table(name: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(name)


def _create(name: str, *elements: Any) -> bool:
    if _has_table(name):
        return False
    op.create_table(name, *elements)
    return True


def _money(*names: str, nullable: bool = False) -> list[sa.Column[Any]]:
    return [sa.Column(n, sa.Double(), nullable=nullable) for n in names]


def upgrade() -> None:
    if _create(
        "fill_costs",
        sa.Column("execution_id", sa.String(64), nullable=False),
        sa.Column("client_order_id", sa.String(CLIENT_ORDER_ID_MAX_LENGTH), nullable=False),
        sa.Column("correlation_id", sa.String(64), nullable=True),
        sa.Column("signal_id", sa.String(64), nullable=True),
        sa.Column("strategy", sa.String(64), nullable=True),
        sa.Column("broker", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        *_money("quantity", "price", "fee"),
        sa.Column("filled_at", UTCDateTime(), nullable=False),
        sa.Column("arrival_price", sa.Double(), nullable=True),
        sa.Column("arrival_at", UTCDateTime(), nullable=True),
        *_money(
            "slippage_bps",
            "shadow_quantity",
            "shadow_price",
            "shadow_fee",
            "shadow_price_diff_bps",
            nullable=True,
        ),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", name="pk_fill_costs"),
        sa.CheckConstraint(SIDE, name="ck_fill_costs_side"),
    ):
        for column in ("client_order_id", "signal_id", "strategy"):
            op.create_index(f"ix_fill_costs_{column}", "fill_costs", [column])
    if _create(
        "order_costs",
        sa.Column("client_order_id", sa.String(CLIENT_ORDER_ID_MAX_LENGTH), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=True),
        sa.Column("broker", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        *_money("quantity", "filled_quantity", "arrival_price"),
        sa.Column("avg_price", sa.Double(), nullable=True),
        *_money(
            "last_price",
            "fees",
            "execution_cost",
            "opportunity_cost",
            "shortfall",
            "shortfall_bps",
        ),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("client_order_id", name="pk_order_costs"),
        sa.CheckConstraint(SIDE, name="ck_order_costs_side"),
    ):
        op.create_index("ix_order_costs_strategy", "order_costs", ["strategy"])
    if _create(
        "signal_horizons",
        sa.Column("signal_id", sa.String(64), nullable=False),
        sa.Column("horizon_bars", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("timeframe", sa.String(8), nullable=False),
        sa.Column("signal_at", UTCDateTime(), nullable=False),
        sa.Column("strength", sa.Double(), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        *_money("quantity", "avg_price", "fees", "arrival_price"),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("exit_at", UTCDateTime(), nullable=True),
        *_money("exit_price", "forward_return", "pnl", nullable=True),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("signal_id", "horizon_bars", name="pk_signal_horizons"),
        sa.CheckConstraint(SIDE, name="ck_signal_horizons_side"),
        sa.CheckConstraint(HORIZON_STATUS, name="ck_signal_horizons_status"),
    ):
        op.create_index("ix_signal_horizons_status", "signal_horizons", ["status"])
        op.create_index(
            "ix_signal_horizons_strategy_horizon_bars",
            "signal_horizons",
            ["strategy", "horizon_bars"],
        )


def downgrade() -> None:
    for name in NEW_TABLES:
        if _has_table(name):
            op.drop_table(name)
