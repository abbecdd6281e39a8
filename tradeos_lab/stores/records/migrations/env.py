"""Alembic environment of the records database.

`RecordsStore.upgrade()` hands over an open connection in `config.attributes["connection"]`;
the command line builds an engine from `-x url=...`, `sqlalchemy.url`, or the workbench settings.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from tradeos_lab.stores.records.models import Base
from tradeos_lab.stores.records.store import (
    MIGRATION_LOCK,
    check_foreign_keys,
    sqlite_foreign_keys_off,
)

config = context.config


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two processes upgrading at once would otherwise race on the same DDL.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()
        check_foreign_keys(connection)


def _from_command_line() -> None:
    from tradeos_lab.settings import load_settings
    from tradeos_lab.stores.records.store import RecordsStore

    if config.config_file_name:
        fileConfig(config.config_file_name)
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    store = RecordsStore.from_url(url) if url else RecordsStore.open(load_settings())
    try:
        with store.engine.connect() as connection, sqlite_foreign_keys_off(connection):
            _migrate(connection)
            connection.commit()
    finally:
        store.close()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: the migrations inspect the database")

_connection = config.attributes.get("connection")
if isinstance(_connection, Connection):
    _migrate(_connection)
else:
    _from_command_line()
