"""`records`: the records database from a terminal. A server database (PostgreSQL) is migrated
only on purpose, by `up` or by `records migrate`; a notebook never changes its schema."""

from __future__ import annotations

import click

from tradeos_lab.cli.app import CliContext, pass_cli


@click.group()
def records() -> None:
    """The records database: schema migrations."""


@records.command()
@pass_cli
def migrate(ctx: CliContext) -> None:
    """Bring the records schema to the newest revision (a no-op when it is there) and print it."""
    from tradeos_lab.stores.records import RecordsStore

    with RecordsStore.open(ctx.settings) as store:
        before = store.current_revision()
        store.upgrade()
        after = store.current_revision()
    change = "already at" if before == after else f"migrated from {before or 'empty'} to"
    click.echo(f"records schema {change} revision {after}")
