"""What the pipeline writes: order life cycle, broker order events, position ledger, messages.

- orders gain strategy, broker, stop price, time in force, filled quantity, average price,
  reason (why rejected or canceled) and the broker timestamp/sequence of the last update
  applied; status and time in force are checked against the contract vocabularies, and
  0 <= filled_quantity <= quantity.
- order_events (every broker update as received), position_ledger (fills applied once per
  execution id, signed), and signals, intents, risk_events, audit (bus messages by message id).
- one name per concept, as in the contracts: `qty` is `quantity` everywhere, and a position
  snapshot's `market_price` is `mark_price`.
- client order ids are at most `CLIENT_ORDER_ID_MAX_LENGTH` (48, Alpaca's limit) characters.

Idempotent like 0001: every step checks the schema first. Existing fills are applied to the
ledger once. On SQLite, tables are rebuilt (batch mode); the store turns foreign keys off for
the migration and checks them before committing.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from tradeos_lab.contracts.enums import OrderStatus, TimeInForce
from tradeos_lab.contracts.types import CLIENT_ORDER_ID_MAX_LENGTH
from tradeos_lab.stores.records.models import NAMING_CONVENTION
from tradeos_lab.stores.records.sqltypes import JSONDoc, UTCDateTime

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ID_LENGTH = 64
SIDE = "side IN ('buy', 'sell')"
MESSAGE_ID = 36


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


STATUS = _in("status", [s.value for s in OrderStatus])
TIME_IN_FORCE = _in("time_in_force", [t.value for t in TimeInForce])

# Columns added to orders, in order; dropped again by the downgrade.
ORDER_COLUMNS: tuple[tuple[str, Any, dict[str, Any]], ...] = (
    ("strategy", sa.String(64), {}),
    ("broker", sa.String(32), {}),
    ("stop_price", sa.Double(), {}),
    ("time_in_force", sa.String(8), {"nullable": False, "server_default": "day"}),
    ("filled_quantity", sa.Double(), {"nullable": False, "server_default": "0"}),
    ("avg_price", sa.Double(), {}),
    ("reason", sa.String(256), {}),
    ("broker_updated_at", UTCDateTime(), {}),
    ("broker_sequence", sa.BigInteger(), {}),
)
ORDER_CHECKS = {
    "ck_orders_status": STATUS,
    "ck_orders_time_in_force": TIME_IN_FORCE,
    "ck_orders_filled_quantity": "filled_quantity >= 0 AND filled_quantity <= quantity",
}
# Column renames per table (old, new); orders are handled with their other changes.
RENAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "orders": (("qty", "quantity"),),
    "fills": (("qty", "quantity"),),
    "trades": (("qty", "quantity"),),
    "position_snapshots": (("qty", "quantity"), ("market_price", "mark_price")),
}
CLIENT_ORDER_ID_TABLES = ("orders", "fills", "trades")
NEW_TABLES = ("audit", "risk_events", "intents", "signals", "position_ledger", "order_events")


def _columns(table: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in sa.inspect(op.get_bind()).get_columns(table)}


def _checks(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_check_constraints(table)}


def _has_table(name: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(name)


def _create(name: str, *elements: Any) -> bool:
    if _has_table(name):
        return False
    op.create_table(name, *elements)
    return True


def _published(table: str) -> list[Any]:
    """The envelope columns every kept bus message has."""
    return [
        sa.Column("message_id", sa.String(MESSAGE_ID), nullable=False),
        sa.Column("version", sa.String(20), nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=False),
        sa.Column("causation_id", sa.String(MESSAGE_ID), nullable=True),
        sa.Column("producer", sa.String(64), nullable=False),
        sa.Column("produced_at", UTCDateTime(), nullable=False),
        sa.Column("payload", JSONDoc, nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=f"pk_{table}"),
    ]


def _published_indexes(table: str) -> None:
    op.create_index(f"ix_{table}_correlation_id", table, ["correlation_id"])
    op.create_index(f"ix_{table}_produced_at", table, ["produced_at"])


def _id_length(table: str) -> int | None:
    return getattr(_columns(table)["client_order_id"]["type"], "length", None)


def upgrade() -> None:
    _upgrade_orders()
    for table in list(RENAMES)[1:]:
        columns = _columns(table)
        renames = [(old, new) for old, new in RENAMES[table] if old in columns]
        needs_length = table in CLIENT_ORDER_ID_TABLES and (
            _id_length(table) != CLIENT_ORDER_ID_MAX_LENGTH
        )
        if renames or needs_length:
            with op.batch_alter_table(table, naming_convention=NAMING_CONVENTION) as batch:
                for old, new in renames:
                    batch.alter_column(old, new_column_name=new)
                if needs_length:
                    batch.alter_column(
                        "client_order_id",
                        type_=sa.String(CLIENT_ORDER_ID_MAX_LENGTH),
                        existing_type=sa.String(OLD_ID_LENGTH),
                        existing_nullable=False,
                    )
    _create_tables()
    _apply_existing_fills_to_ledger()


def _upgrade_orders() -> None:
    op.execute("UPDATE orders SET status = 'canceled' WHERE status = 'cancelled'")
    columns = _columns("orders")
    checks = _checks("orders")
    with op.batch_alter_table("orders", naming_convention=NAMING_CONVENTION) as batch:
        if "qty" in columns:
            batch.alter_column("qty", new_column_name="quantity")
        if _id_length("orders") != CLIENT_ORDER_ID_MAX_LENGTH:
            batch.alter_column(
                "client_order_id",
                type_=sa.String(CLIENT_ORDER_ID_MAX_LENGTH),
                existing_type=sa.String(OLD_ID_LENGTH),
                existing_nullable=False,
            )
        for name, type_, options in ORDER_COLUMNS:
            if name not in columns:
                batch.add_column(sa.Column(name, type_, **{"nullable": True, **options}))
    added_filled = "filled_quantity" not in columns
    if added_filled:
        op.execute("UPDATE orders SET filled_quantity = quantity WHERE status = 'filled'")
    with op.batch_alter_table("orders", naming_convention=NAMING_CONVENTION) as batch:
        for name, check in ORDER_CHECKS.items():
            if name not in checks:
                batch.create_check_constraint(op.f(name), check)
    indexes = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("orders")}
    if "ix_orders_strategy" not in indexes:
        op.create_index("ix_orders_strategy", "orders", ["strategy"])


def _create_tables() -> None:
    cid = sa.String(CLIENT_ORDER_ID_MAX_LENGTH)
    if _create(
        "order_events",
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("client_order_id", cid, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("filled_quantity", sa.Double(), nullable=True),
        sa.Column("avg_price", sa.Double(), nullable=True),
        sa.Column("broker_order_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(256), nullable=True),
        sa.Column("broker_at", UTCDateTime(), nullable=False),
        sa.Column("broker_sequence", sa.BigInteger(), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_order_events"),
        sa.ForeignKeyConstraint(
            ["client_order_id"],
            ["orders.client_order_id"],
            name="fk_order_events_client_order_id_orders",
        ),
        sa.CheckConstraint(STATUS, name=op.f("ck_order_events_status")),
    ):
        op.create_index("ix_order_events_client_order_id", "order_events", ["client_order_id"])

    if _create(
        "position_ledger",
        sa.Column("execution_id", sa.String(64), nullable=False),
        sa.Column("client_order_id", cid, nullable=False),
        sa.Column("strategy", sa.String(64), nullable=True),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("quantity", sa.Double(), nullable=False),
        sa.Column("signed_quantity", sa.Double(), nullable=False),
        sa.Column("price", sa.Double(), nullable=False),
        sa.Column("fee", sa.Double(), nullable=False),
        sa.Column("executed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", name="pk_position_ledger"),
        sa.ForeignKeyConstraint(
            ["client_order_id"],
            ["orders.client_order_id"],
            name="fk_position_ledger_client_order_id_orders",
        ),
        sa.CheckConstraint(SIDE, name=op.f("ck_position_ledger_side")),
    ):
        op.create_index(
            "ix_position_ledger_symbol_strategy", "position_ledger", ["symbol", "strategy"]
        )

    if _create(
        "signals",
        *_published("signals"),
        sa.Column("stage", sa.String(8), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.CheckConstraint("stage IN ('raw', 'modified')", name=op.f("ck_signals_stage")),
    ):
        _published_indexes("signals")

    if _create(
        "intents",
        *_published("intents"),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("quantity", sa.Double(), nullable=False),
        sa.Column("signal_id", sa.String(MESSAGE_ID), nullable=True),
        sa.CheckConstraint(SIDE, name=op.f("ck_intents_side")),
    ):
        _published_indexes("intents")

    if _create(
        "risk_events",
        *_published("risk_events"),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("scope", sa.String(128), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
    ):
        _published_indexes("risk_events")

    if _create(
        "audit",
        *_published("audit"),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
    ):
        _published_indexes("audit")


def _apply_existing_fills_to_ledger() -> None:
    op.execute(
        "INSERT INTO position_ledger (execution_id, client_order_id, strategy, symbol, side, "
        "quantity, signed_quantity, price, fee, executed_at) "
        "SELECT f.execution_id, f.client_order_id, o.strategy, f.symbol, f.side, f.quantity, "
        "CASE WHEN f.side = 'buy' THEN f.quantity ELSE -f.quantity END, f.price, f.fee, "
        "f.filled_at FROM fills f JOIN orders o ON o.client_order_id = f.client_order_id "
        "WHERE NOT EXISTS "
        "(SELECT 1 FROM position_ledger l WHERE l.execution_id = f.execution_id)"
    )


def downgrade() -> None:
    for name in NEW_TABLES:  # order_events and position_ledger reference orders
        if _has_table(name):
            op.drop_table(name)
    for table in reversed(list(RENAMES)[1:]):
        columns = _columns(table)
        renames = [(old, new) for old, new in RENAMES[table] if new in columns]
        needs_length = table in CLIENT_ORDER_ID_TABLES and _id_length(table) != OLD_ID_LENGTH
        if renames or needs_length:
            with op.batch_alter_table(table, naming_convention=NAMING_CONVENTION) as batch:
                for old, new in renames:
                    batch.alter_column(new, new_column_name=old)
                if needs_length:
                    batch.alter_column(
                        "client_order_id",
                        type_=sa.String(OLD_ID_LENGTH),
                        existing_type=sa.String(CLIENT_ORDER_ID_MAX_LENGTH),
                        existing_nullable=False,
                    )
    columns = _columns("orders")
    checks = _checks("orders")
    indexes = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("orders")}
    if "ix_orders_strategy" in indexes:
        op.drop_index("ix_orders_strategy", "orders")
    with op.batch_alter_table("orders", naming_convention=NAMING_CONVENTION) as batch:
        for name in ORDER_CHECKS:
            if name in checks:
                batch.drop_constraint(op.f(name), type_="check")
        for name, _, _ in reversed(ORDER_COLUMNS):
            if name in columns:
                batch.drop_column(name)
        if "quantity" in columns:
            batch.alter_column("quantity", new_column_name="qty")
        if _id_length("orders") != OLD_ID_LENGTH:
            batch.alter_column(
                "client_order_id",
                type_=sa.String(OLD_ID_LENGTH),
                existing_type=sa.String(CLIENT_ORDER_ID_MAX_LENGTH),
                existing_nullable=False,
            )
