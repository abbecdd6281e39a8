"""Running totals of the position ledger and of the fills, kept by the database.

Feasibility reads a strategy's and the account's position in a symbol on each batch, and the
paper broker its account (what each symbol's fills add up to) on each batch of Positions. As
sums over `position_ledger` and `fills` those reads grew with the whole history of fills. Now
`position_totals` (per strategy and symbol) and `fill_totals` (per broker and symbol) hold the
sums, and triggers on the two tables keep them on every insert, update and delete, so no writer
(the store, reconciliation, a hand-written statement) can leave them behind. A row whose count
of summed rows falls to zero is deleted, so the totals have the same keys as a GROUP BY of the
rows. (TRUNCATE fires no row trigger on PostgreSQL: 0013 adds a statement trigger for it.)

Entries without a strategy are summed under `NO_STRATEGY` (''): NULLs never collide in a key.

The upgrade recomputes the totals from the rows, so it backfills an existing database and is
idempotent like the others. On SQLite a table rebuilt by `batch_alter_table` loses its
triggers: a later migration that rebuilds `fills` or `position_ledger` must create them again
(`create_triggers`).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


class Totals(NamedTuple):
    """A totals table: the rows it sums, its key and summed columns as SQL expressions of a
    source row (`{r}`: NEW, OLD or the backfill's alias), and its count column."""

    table: str
    source: str
    keys: tuple[tuple[str, str], ...]
    sums: tuple[tuple[str, str], ...]
    count: str
    watched: tuple[str, ...]
    """The source columns the sums and keys read: an update of others changes nothing."""


_BUY: Final = "{r}.side = 'buy'"
TOTALS: Final = (
    Totals(
        table="position_totals",
        source="position_ledger",
        keys=(("strategy", "COALESCE({r}.strategy, '')"), ("symbol", "{r}.symbol")),
        sums=(("quantity", "{r}.signed_quantity"),),
        count="entries",
        watched=("strategy", "symbol", "signed_quantity"),
    ),
    Totals(
        table="fill_totals",
        source="fills",
        keys=(("broker", "{r}.broker"), ("symbol", "{r}.symbol")),
        # The signs of `RecordsStore.fill_totals`: a buy adds quantity and costs cash.
        sums=(
            ("quantity", f"CASE WHEN {_BUY} THEN {{r}}.quantity ELSE -{{r}}.quantity END"),
            (
                "cash_flow",
                f"CASE WHEN {_BUY} THEN -{{r}}.quantity * {{r}}.price "
                "ELSE {r}.quantity * {r}.price END",
            ),
            ("fees", "{r}.fee"),
        ),
        count="fills",
        watched=("broker", "symbol", "side", "quantity", "price", "fee"),
    ),
)


def _add(t: Totals, r: str) -> str:
    """Add source row `r` to its totals row, creating it."""
    columns = [c for c, _ in t.keys] + [c for c, _ in t.sums] + [t.count]
    values = [e.format(r=r) for _, e in t.keys] + [e.format(r=r) for _, e in t.sums] + ["1"]
    update = ", ".join(f"{c} = {t.table}.{c} + excluded.{c}" for c in [*dict(t.sums), t.count])
    return (
        f"INSERT INTO {t.table} ({', '.join(columns)}) VALUES ({', '.join(values)}) "
        f"ON CONFLICT ({', '.join(c for c, _ in t.keys)}) DO UPDATE SET {update};"
    )


def _remove(t: Totals, r: str) -> str:
    """Take source row `r` out of its totals row, deleting the row when it sums nothing."""
    where = " AND ".join(f"{c} = {e.format(r=r)}" for c, e in t.keys)
    update = ", ".join(f"{c} = {c} - ({e.format(r=r)})" for c, e in t.sums)
    return (
        f"UPDATE {t.table} SET {update}, {t.count} = {t.count} - 1 WHERE {where}; "
        f"DELETE FROM {t.table} WHERE {where} AND {t.count} <= 0;"
    )


def _trigger_sql(t: Totals, dialect: str) -> list[str]:
    watched = ", ".join(t.watched)
    if dialect == "postgresql":
        function = f"{t.table}_keep"
        return [
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            f"  IF TG_OP IN ('UPDATE', 'DELETE') THEN {_remove(t, 'OLD')} END IF;\n"
            f"  IF TG_OP IN ('INSERT', 'UPDATE') THEN {_add(t, 'NEW')} END IF;\n"
            "  RETURN NULL;\n"
            "END $$",
            f"DROP TRIGGER IF EXISTS {t.table} ON {t.source}",
            f"CREATE TRIGGER {t.table} AFTER INSERT OR UPDATE OF {watched} OR DELETE "
            f"ON {t.source} FOR EACH ROW EXECUTE FUNCTION {function}()",
        ]
    bodies = {
        "insert": ("INSERT", _add(t, "NEW")),
        "update": (f"UPDATE OF {watched}", _remove(t, "OLD") + " " + _add(t, "NEW")),
        "delete": ("DELETE", _remove(t, "OLD")),
    }
    statements = []
    for name, (event, body) in bodies.items():
        trigger = f"{t.table}_{name}"
        statements += [
            f"DROP TRIGGER IF EXISTS {trigger}",
            f"CREATE TRIGGER {trigger} AFTER {event} ON {t.source} FOR EACH ROW BEGIN {body} END",
        ]
    return statements


def _drop_trigger_sql(t: Totals, dialect: str) -> list[str]:
    if dialect != "postgresql":
        return [f"DROP TRIGGER IF EXISTS {t.table}_{n}" for n in ("insert", "update", "delete")]
    drop = [f"DROP TRIGGER IF EXISTS {t.table} ON {t.source}"] if _has_table(t.source) else []
    return [*drop, f"DROP FUNCTION IF EXISTS {t.table}_keep()"]


def _backfill_sql(t: Totals) -> list[str]:
    """The totals recomputed from the source rows."""
    keys = [e.format(r="r") for _, e in t.keys]
    sums = [f"SUM({e.format(r='r')})" for _, e in t.sums]
    columns = [c for c, _ in t.keys] + [c for c, _ in t.sums] + [t.count]
    return [
        f"DELETE FROM {t.table}",
        f"INSERT INTO {t.table} ({', '.join(columns)}) "
        f"SELECT {', '.join([*keys, *sums, 'COUNT(*)'])} FROM {t.source} r "
        f"GROUP BY {', '.join(keys)}",
    ]


def create_triggers() -> None:
    """(Re)create the triggers that keep the totals."""
    dialect = op.get_bind().dialect.name
    for t in TOTALS:
        for statement in _trigger_sql(t, dialect):
            op.execute(statement)


def _has_table(name: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    if not _has_table("position_totals"):
        op.create_table(
            "position_totals",
            sa.Column("strategy", sa.String(64), nullable=False),
            sa.Column("symbol", sa.String(20), nullable=False),
            sa.Column("quantity", sa.Double(), nullable=False),
            sa.Column("entries", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("strategy", "symbol", name="pk_position_totals"),
        )
    if not _has_table("fill_totals"):
        op.create_table(
            "fill_totals",
            sa.Column("broker", sa.String(32), nullable=False),
            sa.Column("symbol", sa.String(20), nullable=False),
            sa.Column("quantity", sa.Double(), nullable=False),
            sa.Column("cash_flow", sa.Double(), nullable=False),
            sa.Column("fees", sa.Double(), nullable=False),
            sa.Column("fills", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("broker", "symbol", name="pk_fill_totals"),
        )
    # Triggers first: on PostgreSQL creating them locks out writers of the source tables until
    # this transaction commits, so no row lands between the backfill and the triggers.
    create_triggers()
    for t in TOTALS:
        for statement in _backfill_sql(t):
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for t in TOTALS:
        for statement in _drop_trigger_sql(t, dialect):
            op.execute(statement)
        if _has_table(t.table):
            op.drop_table(t.table)
