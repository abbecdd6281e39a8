"""`RecordsStore`: the durable records on SQLite (embedded) or PostgreSQL, behind one small API.

The schema belongs to the Alembic migrations shipped in `migrations/`; `upgrade()` runs them in
one transaction on the store's engine. Every write method is idempotent on its natural key
(client order id, broker event id, broker execution id, bus message id, snapshot time), so a
redelivered message never doubles a record. Database errors are translated at this edge into the
workbench's exceptions.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, Protocol, TypeAlias, TypeVar, cast

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from psycopg import errors as pg_errors
from sqlalchemy import (
    Executable,
    Row,
    Select,
    Table,
    bindparam,
    case,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, Dialect, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
    StatementError,
)
from sqlalchemy.orm import Bundle, Session, sessionmaker

from tradeos_lab.contracts.enums import OrderStatus, Side
from tradeos_lab.contracts.messages import (
    AuditMessage,
    IntentMessage,
    ModifiedSignalMessage,
    NewsArticleMessage,
    RawSignalMessage,
    RiskEventMessage,
)
from tradeos_lab.contracts.payloads import PositionUpdate
from tradeos_lab.contracts.types import CLIENT_ORDER_ID_MAX_LENGTH, CLIENT_ORDER_ID_PATTERN
from tradeos_lab.errors import (
    ConfigError,
    DataDirError,
    DependencyUnavailable,
    StoreError,
    TradeosError,
    ValidationError,
)
from tradeos_lab.settings import Settings
from tradeos_lab.stores.records.models import (
    BACKTEST_KINDS,
    BACKTEST_STATES,
    CONFIG_PROPOSAL_STATES,
    ORDER_SIDES,
    SIGNAL_HORIZON_STATES,
    SIGNAL_OUTCOMES,
    TIMES_IN_FORCE,
    AuditRecord,
    BacktestRun,
    Base,
    ConfigChange,
    ConfigProposal,
    Fill,
    FillCost,
    FillTotal,
    IntentRecord,
    LedgerEntry,
    NewsArticleRecord,
    NewsScoreRecord,
    Order,
    OrderCost,
    OrderEvent,
    PolicyProfile,
    PolicyProfileVersion,
    PositionSnapshot,
    PositionTotal,
    RiskEventRecord,
    SignalHorizon,
    SignalOutcome,
    SignalRecord,
    SystemConfig,
    Trade,
    WeightAdjustment,
)
from tradeos_lab.stores.records.order_state import OrderState, OrderUpdate, advance
from tradeos_lab.stores.records.sqltypes import JSONText, json_document
from tradeos_lab.stores.records.timescale import timescaledb_installed
from tradeos_lab.stores.records.write_turns import WriteTurns
from tradeos_lab.symbols import canonical_name, validate_symbol

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# What an operator runs to create or update a server records schema (the CLI command).
MIGRATE_COMMAND = "tradeos-lab records migrate"
# A new order is recorded before the broker has said anything that would move it on.
_NEW_ORDER_STATUSES = (OrderStatus.NEW.value, OrderStatus.SUBMITTED.value)
# An order in one of these is still working at its broker.
_OPEN_ORDER_STATUSES = (
    *_NEW_ORDER_STATUSES,
    OrderStatus.ACCEPTED.value,
    OrderStatus.PARTIALLY_FILLED.value,
)
SQLITE_FILE = "records.db"
# The PostgreSQL advisory lock a migration holds, so two processes never run the same DDL at once.
# Any constant works; it only has to be the same for every process migrating one database.
MIGRATION_LOCK = 0x7472_6F73
SQLITE_BUSY_TIMEOUT_MS = 5_000
# The execution option marking a read-only session (`RecordsStore.reading`).
_READ_ONLY = "tradeos_records_read_only"

# Printable ASCII without spaces: stream message ids, UUIDs, broker ids.
_IDENTIFIER = re.compile(r"[\x21-\x7e]+")
_CONFIG_KEY = re.compile(r"[a-z][a-z0-9_.]{0,63}")
_CLIENT_ORDER_ID = re.compile(CLIENT_ORDER_ID_PATTERN.removeprefix("^").removesuffix("$"))
_WORD = re.compile(r"[a-z][a-z0-9_]{0,31}")
_KeptT = TypeVar("_KeptT", SignalRecord, IntentRecord, RiskEventRecord, AuditRecord)

# The tca service's reads, built once rather than per call: plain columns, no ORM objects.
_TRADE_CHAINS: Select[Any, Any] = (
    select(
        Bundle(
            "trade",
            Trade.execution_id,
            Trade.client_order_id,
            Trade.symbol,
            Trade.side,
            Trade.quantity,
            Trade.price,
            Trade.raw_signal_id,
            Trade.modified_signal_id,
        ),
        Bundle(
            "order",
            Order.client_order_id,
            Order.symbol,
            Order.side,
            Order.quantity,
            Order.strategy,
            Order.broker,
        ),
    )
    .join(Order, Order.client_order_id == Trade.client_order_id)
    .where(Trade.execution_id.in_(bindparam("ids", expanding=True)))
)
# Execution's reads of a batch of intents, built once rather than per call, on the tables
# themselves: a plain column read needs none of the ORM's per-statement work.
_INTENTS = cast(Table, IntentRecord.__table__)
_ORDERS = cast(Table, Order.__table__)
_SIGNALS = cast(Table, SignalRecord.__table__)
_KEPT_INTENTS = select(_INTENTS.c.message_id).where(
    _INTENTS.c.message_id.in_(bindparam("ids", expanding=True))
)
_KNOWN_ORDERS = select(_ORDERS.c.client_order_id).where(
    _ORDERS.c.client_order_id.in_(bindparam("ids", expanding=True))
)
# A position from the ledger's sums (`position_totals`): a strategy's in a symbol, or the
# account's (every strategy's) in it; and a strategy's working orders there.
_NET_QUANTITY = func.coalesce(func.sum(PositionTotal.quantity), 0.0)
_ACCOUNT_POSITION = select(_NET_QUANTITY).where(PositionTotal.symbol == bindparam("symbol"))
_STRATEGY_POSITION = _ACCOUNT_POSITION.where(PositionTotal.strategy == bindparam("strategy"))
_WORKING_ORDERS = select(_ORDERS.c.side, _ORDERS.c.quantity, _ORDERS.c.filled_quantity).where(
    _ORDERS.c.strategy == bindparam("strategy"),
    _ORDERS.c.symbol == bindparam("symbol"),
    _ORDERS.c.status.in_(_OPEN_ORDER_STATUSES),
)
_RAW_SIGNAL_IDS = select(
    _SIGNALS.c.message_id,
    _SIGNALS.c.payload["raw_signal_id"].as_string().label("raw_signal_id"),
).where(_SIGNALS.c.message_id.in_(bindparam("ids", expanding=True)))
_SIGNAL_ROWS = select(
    SignalRecord.message_id,
    SignalRecord.strategy,
    SignalRecord.symbol,
    SignalRecord.ts,
    SignalRecord.payload,
).where(SignalRecord.message_id.in_(bindparam("ids", expanding=True)))
_HORIZONS_OF_OPEN_SIGNALS = (
    select(
        SignalHorizon.signal_id,
        SignalHorizon.horizon_bars,
        SignalHorizon.strategy,
        SignalHorizon.symbol,
        SignalHorizon.timeframe,
        SignalHorizon.signal_at,
        SignalHorizon.side,
        SignalHorizon.quantity,
        SignalHorizon.avg_price,
        SignalHorizon.fees,
        SignalHorizon.arrival_price,
        SignalHorizon.status,
        SignalHorizon.exit_at,
        SignalHorizon.pnl,
        SignalHorizon.opened_at,
    )
    .where(
        SignalHorizon.signal_id.in_(
            select(SignalHorizon.signal_id).where(SignalHorizon.status == "open")
        )
    )
    .order_by(SignalHorizon.signal_at, SignalHorizon.signal_id, SignalHorizon.horizon_bars)
)
_FILL_AMOUNTS = (
    select(
        FillCost.execution_id,
        FillCost.client_order_id,
        FillCost.correlation_id,
        FillCost.signal_id,
        FillCost.side,
        FillCost.quantity,
        FillCost.price,
        FillCost.fee,
        FillCost.slippage_bps,
    )
    .where(
        FillCost.client_order_id.in_(bindparam("cids", expanding=True))
        | FillCost.signal_id.in_(bindparam("sids", expanding=True))
    )
    .order_by(FillCost.filled_at, FillCost.execution_id)
)

#: The pipeline messages the records keep (`RecordsStore.keep_messages`).
KeptMessage = (
    RawSignalMessage | ModifiedSignalMessage | IntentMessage | RiskEventMessage | AuditMessage
)

FillCostRow: TypeAlias = Row[Any]
"""A `fill_costs` row as stored, its columns as attributes named as on `FillCost`. The tca service
reads several per fill it measures; a plain row costs about half of an ORM object to load."""
SignalHorizonRow: TypeAlias = Row[Any]
"""A `signal_horizons` row as stored, its columns as attributes named as on `SignalHorizon` (read
plain for the same reason as `FillCostRow`)."""
TradeChainRow: TypeAlias = Row[Any, Any]
"""A trade and its order as plain values (`RecordsStore.trade_chains_of`): `.trade` and `.order`,
each with the columns TCA measures a fill by, named as on `Trade` and `Order`."""
SignalRow: TypeAlias = Row[Any]
"""A kept signal's `message_id`, `strategy`, `symbol`, `ts` and `payload`, named as on
`SignalRecord` (`RecordsStore.signal_rows_of`)."""
FillAmountRow: TypeAlias = Row[Any]
"""A kept fill cost's ids and amounts, named as on `FillCost` (`RecordsStore.fill_amounts_of`):
`execution_id`, `client_order_id`, `correlation_id`, `signal_id`, `side`, `quantity`, `price`,
`fee` and `slippage_bps`."""


_LITERALS = {"literal_binds": True}
_NOTHING = object()


@dataclass(frozen=True, slots=True)
class _ManyWrite:
    """A write statement compiled for one database and one set of row keys
    (`RecordsStore._write_many`): its SQL and how a row becomes the driver's parameters."""

    sql: str
    positional: bool
    getter: Callable[[Mapping[str, Any]], Any]
    """The row's values in the statement's order (positional), as a tuple."""
    processors: tuple[tuple[Any, Callable[[Any], Any]], ...]
    """(position or name, the column type's bind processor) of the row's values that have one."""
    constants: tuple[tuple[Any, Any], ...]
    """(position or name, value as sent) of the statement's own values (e.g. a literal in its
    WHERE), in position order."""

    @classmethod
    def of(
        cls, statement: Executable, dialect: Dialect, row_keys: tuple[str, ...]
    ) -> _ManyWrite | None:
        """None when the statement needs SQLAlchemy's own per-row work: a column default
        computed in Python, values fetched back, bind names escaped."""
        compiled = cast(Any, statement).compile(dialect=dialect, column_keys=list(row_keys))
        if (
            compiled.insert_prefetch
            or compiled.postfetch
            or compiled.effective_returning
            or compiled.escaped_bind_names
        ):
            return None
        binds: dict[str, Any] = compiled.binds
        bind_processors: dict[str, Callable[[Any], Any]] = compiled._bind_processors
        keys = set(row_keys)

        def constant(name: str) -> Any:
            value = binds[name].effective_value
            process = bind_processors.get(name)
            return process(value) if process is not None else value

        processors: tuple[tuple[Any, Callable[[Any], Any]], ...]
        constants: tuple[tuple[Any, Any], ...]
        if dialect.positional:
            order: list[str] = list(compiled.positiontup)
            taken = [n for n in order if n in keys]
            processors = tuple(
                (i, p) for i, n in enumerate(taken) if (p := bind_processors.get(n)) is not None
            )
            constants = tuple((i, constant(n)) for i, n in enumerate(order) if n not in keys)
        else:
            taken = list(row_keys)
            processors = tuple(
                (n, p) for n in row_keys if (p := bind_processors.get(n)) is not None
            )
            constants = tuple(
                (n, constant(n)) for n, b in binds.items() if n not in keys and not b.required
            )
        if not taken:
            raise ValidationError("a write of many rows takes one value of each row at least")
        getter = itemgetter(*taken) if len(taken) > 1 else lambda row: (row[taken[0]],)
        return cls(compiled.string, dialect.positional, getter, processors, constants)

    def parameters(self, rows: list[dict[str, Any]]) -> list[Any]:
        """The driver's parameters of each of `rows`."""
        get, processors, constants = self.getter, self.processors, self.constants
        if not self.positional:
            named = []
            for row in rows:
                params = dict(row)
                for name, process in processors:
                    params[name] = process(params[name])
                params.update(constants)
                named.append(params)
            return named
        if not processors and not constants:
            return [get(row) for row in rows]
        # A value the row before had too (the same object: a batch's one `now`, a signal's time
        # on each of its horizons) is processed once.
        seen: list[Any] = [_NOTHING] * len(processors)
        made: list[Any] = [None] * len(processors)
        out = []
        for row in rows:
            values = list(get(row))
            for j, (i, process) in enumerate(processors):
                value = values[i]
                if value is not seen[j]:
                    seen[j], made[j] = value, process(value)
                values[i] = made[j]
            for i, value in constants:
                values.insert(i, value)
            out.append(tuple(values))
        return out


@dataclass(frozen=True, slots=True)
class StrategyBook:
    """A strategy's filled position in a symbol (the ledger), its working orders' signed
    unfilled quantity there, and the account's position in the symbol."""

    held: float
    working: float
    account: float


class FillFacts(Protocol):
    """What a fill says of itself, in a `fills.raw` payload or a broker's report alike."""

    @property
    def execution_id(self) -> str: ...
    @property
    def client_order_id(self) -> str: ...
    @property
    def symbol(self) -> str: ...
    @property
    def side(self) -> Side: ...
    @property
    def quantity(self) -> float: ...
    @property
    def price(self) -> float: ...
    @property
    def fee(self) -> float: ...
    @property
    def ts(self) -> datetime: ...


def fill_columns(fill: FillFacts) -> dict[str, Any]:
    """The fill's own columns in the records (`record_fill`'s keywords but where it came from:
    `broker`, `external`)."""
    return {
        "execution_id": fill.execution_id,
        "client_order_id": fill.client_order_id,
        "symbol": fill.symbol,
        "side": fill.side.value,
        "quantity": fill.quantity,
        "price": fill.price,
        "fee": fill.fee,
        "filled_at": fill.ts,
    }


@dataclass(frozen=True)
class FillTotals:
    """What one symbol's fills at a broker add up to (`RecordsStore.fill_totals`)."""

    quantity: float
    """Net signed quantity: bought minus sold."""
    cash_flow: float
    """Net cash: proceeds of sells minus cost of buys, before fees."""
    fees: float


@dataclass(frozen=True)
class Attribution:
    """A trade with everything it came from: its order, its fill and its signal's outcome."""

    trade: Trade
    order: Order
    fill: Fill | None
    outcome: SignalOutcome | None


def create_records_engine(url: str | URL, *, application_name: str = "tradeos-lab") -> Engine:
    """An engine for a `sqlite://` or `postgresql://` records URL (psycopg 3 for PostgreSQL).

    SQLite gets WAL (readers never block the writer), enforced foreign keys, a busy timeout, and
    real transactions: pysqlite would otherwise run DDL outside them, so a failed migration could
    leave half a schema.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("records_url is not a valid database URL") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return create_engine(
            parsed.set(drivername="postgresql+psycopg"),
            pool_pre_ping=True,
            connect_args={"application_name": application_name},
            json_serializer=json_document,
        )
    if backend != "sqlite":
        raise ConfigError("records_url must be a sqlite:// or postgresql+psycopg:// URL")
    database = parsed.database or ""
    if database in ("", ":memory:"):
        raise ConfigError("records_url needs a SQLite file: every connection must see one database")
    try:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataDirError(f"cannot create the directory of {database}: {e}") from e
    engine = create_engine(parsed.set(drivername="sqlite+pysqlite"), json_serializer=json_document)
    turns = WriteTurns.attach(engine, database)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", partial(_sqlite_on_begin, turns))
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # BEGIN is emitted by _sqlite_on_begin
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across crashes in WAL mode
    cursor.close()


@contextmanager
def sqlite_foreign_keys_off(conn: Connection) -> Iterator[None]:
    """Foreign keys off on a SQLite connection for the length of a migration.

    SQLite alters a table by rebuilding it (copy, drop, rename), and dropping a table that others
    reference would fail or cascade with foreign keys on; the pragma cannot change inside a
    transaction, so it is set here, before the migration's transaction, and the migration checks
    the keys itself before committing (`check_foreign_keys`). A no-op on PostgreSQL.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = cast(sqlite3.Connection, conn.connection.driver_connection)
    raw.execute("PRAGMA foreign_keys=OFF")  # outside any transaction: driver-level, autocommit
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def check_foreign_keys(conn: Connection) -> None:
    """Raise `StoreError` when a SQLite migration left a row pointing at nothing."""
    if conn.dialect.name != "sqlite":
        return
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise StoreError(f"the migration would leave dangling foreign keys: {broken[:5]}")


def _sqlite_on_begin(turns: WriteTurns, connection: Any) -> None:
    # IMMEDIATE takes the write lock up front, so read-then-write methods (set_config) wait for
    # their turn instead of failing when two processes write at once; a read-only session
    # (`RecordsStore.reading`) takes no lock: under WAL it reads a snapshot beside the writer.
    if connection.get_execution_options().get(_READ_ONLY):
        connection.exec_driver_sql("BEGIN DEFERRED")
        return
    turns.take(connection.connection.info)
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class RecordsStore:
    """Orders and their broker events, fills and the position ledger, trades with attribution,
    position snapshots, the pipeline's kept messages, backtests, policy profiles, config and TCA
    outcomes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._batches = threading.local()  # the open `batch()` session of each thread
        self._reads = sessionmaker(
            engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False
        )
        self._many_writes: dict[Hashable, _ManyWrite | None] = {}  # `_write_many`'s writes
        self._write_turns = WriteTurns.of(engine)  # SQLite's writers' turns; None on PostgreSQL

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = False) -> RecordsStore:
        """The store the settings point at (`records_url`, else `data_dir/records.db`)."""
        if settings.records_url is None:
            url: str | URL = URL.create(
                "sqlite+pysqlite", database=str(settings.data_dir / SQLITE_FILE)
            )
        else:
            url = settings.records_url.get_secret_value()
        store = cls(create_records_engine(url, application_name=settings.service_name))
        if migrate:
            store.upgrade()
        return store

    @classmethod
    def from_url(cls, url: str | URL) -> RecordsStore:
        return cls(create_records_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    def write_in_background(self) -> None:
        """Let trading stages write first: this process's writes wait until none of theirs does
        (SQLite; PostgreSQL locks rows, so its writers do not queue for one turn)."""
        if self._write_turns is not None:
            self._write_turns.background = True

    def __enter__(self) -> RecordsStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- schema ---------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations up to `revision`; a no-op when already there."""
        self._alembic("upgrade", revision)

    def downgrade(self, revision: str) -> None:
        """Undo migrations down to `revision` (`"base"` drops every records table)."""
        self._alembic("downgrade", revision)

    @staticmethod
    def head_revision() -> str:
        """The newest migration this package ships (what `upgrade()` moves to)."""
        head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
        if head is None:  # only a broken install ships no migration
            raise StoreError(f"no records migrations found in {MIGRATIONS_DIR}")
        return head

    def current_revision(self) -> str | None:
        with self._translate(), self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @property
    def uses_timescale(self) -> bool:
        """Whether the time-series tables are hypertables (TimescaleDB installed)."""
        with self._translate(), self.engine.connect() as conn:
            return timescaledb_installed(conn)

    def _alembic(self, verb: Literal["upgrade", "downgrade"], revision: str) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        try:
            with (
                self._translate(),
                self.engine.connect() as conn,
                sqlite_foreign_keys_off(conn),
                conn.begin(),
            ):
                config.attributes["connection"] = conn
                getattr(command, verb)(config, revision)
        except CommandError as e:
            raise ValidationError(f"cannot {verb} the records schema to {revision!r}: {e}") from e

    # ---- sessions and errors --------------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction, committed when the block ends without an error (or,
        inside `batch()`, the batch's own session, committed with the batch)."""
        joined: Session | None = getattr(self._batches, "session", None)
        if joined is not None:
            with self._translate():
                yield joined
                # As a call of its own would leave them: written, and its objects detached (a
                # batch's session would otherwise hold them all, and every autoflush look at them)
                joined.flush()
                joined.expunge_all()
            return
        with self._translate(), self._sessions.begin() as session:
            yield session

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except StatementError as e:
            if isinstance(e.orig, TradeosError):  # raised by one of our column types
                raise e.orig from None
            if _missing_schema(e):
                raise StoreError(
                    f"the records schema is missing or outdated ({_reason(e)}); "
                    f"run `{MIGRATE_COMMAND}` (or RecordsStore.upgrade() in code)"
                ) from e
            if isinstance(e, IntegrityError):
                raise StoreError(f"records constraint violated: {_reason(e)}") from e
            if isinstance(e, OperationalError):
                raise DependencyUnavailable(f"records database unavailable: {_reason(e)}") from e
            raise StoreError(f"records operation failed: {_reason(e)}") from e
        except SQLAlchemyError as e:
            raise StoreError(f"records operation failed: {e}") from e

    def _insert_ignore(self, session: Session, model: type[Base], values: dict[str, Any]) -> bool:
        """INSERT that skips rows colliding with any unique key; True when a row was added."""
        # RETURNING tells a new row from a skipped one on both backends (rowcount does not when
        # SQLAlchemy adds RETURNING for the primary key itself).
        table = cast(Table, model.__table__)
        key = list(table.primary_key.columns)
        stmt: Executable
        if self.engine.dialect.name == "postgresql":
            stmt = pg_insert(table).values(values).on_conflict_do_nothing().returning(*key)
        else:
            stmt = sqlite_insert(table).values(values).on_conflict_do_nothing().returning(*key)
        return session.execute(stmt).first() is not None

    # ---- orders, fills, trades ------------------------------------------------------------

    def record_order(
        self,
        *,
        client_order_id: str,
        symbol: str,
        side: str,
        quantity: float,
        order_type: str = "market",
        limit_price: float | None = None,
        stop_price: float | None = None,
        time_in_force: str = "day",
        strategy: str | None = None,
        broker: str | None = None,
        status: str = "new",
        intent_id: str | None = None,
        correlation_id: str | None = None,
        broker_order_id: str | None = None,
        at: datetime | None = None,
        external: bool = False,
    ) -> bool:
        """Record an order once per `client_order_id`; False when it was already recorded.

        Later broker updates go through `apply_order_update`, which keeps the order's life cycle.
        `external`: found at the broker by reconciliation, not placed by Execution.
        """
        values = _order_row(
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            order_type=order_type,
            limit_price=limit_price,
            stop_price=stop_price,
            time_in_force=time_in_force,
            strategy=strategy,
            broker=broker,
            status=status,
            intent_id=intent_id,
            correlation_id=correlation_id,
            broker_order_id=broker_order_id,
            at=at,
            external=external,
        )
        with self.session() as session:
            return self._insert_ignore(session, Order, values)

    def order(self, client_order_id: str) -> Order:
        """The order recorded under `client_order_id`."""
        with self.reading() as session:
            found = session.scalar(
                select(Order).where(Order.client_order_id == client_order_id_of(client_order_id))
            )
            if found is None:
                raise ValidationError(f"no order with client_order_id {client_order_id!r}")
            return found

    def find_order(self, client_order_id: str) -> Order | None:
        """The order recorded under `client_order_id`, or None when there is none."""
        with self.reading() as session:
            return session.scalar(
                select(Order).where(Order.client_order_id == client_order_id_of(client_order_id))
            )

    def apply_order_update(
        self,
        client_order_id: str,
        *,
        event_id: str,
        status: str,
        broker_at: datetime,
        filled_quantity: float | None = None,
        avg_price: float | None = None,
        broker_order_id: str | None = None,
        reason: str | None = None,
        sequence: int | None = None,
    ) -> bool:
        """Record a broker update of an order and move the order by `order_state.advance`.

        Every update is kept in `order_events` once per `event_id` (the broker's event id or the
        bus message id): a repeat is a no-op. The order row is locked while the rule is applied,
        so concurrent updates are folded one at a time. True when the order changed; a late,
        older or regressing update is recorded but changes nothing.
        """
        update = _order_update(
            status=status,
            broker_at=broker_at,
            filled_quantity=filled_quantity,
            avg_price=avg_price,
            broker_order_id=broker_order_id,
            reason=reason,
            sequence=sequence,
        )
        event = _ident(event_id, "event_id", limit=128)
        cid = client_order_id_of(client_order_id)
        with self.session() as session:
            order = session.scalar(
                select(Order).where(Order.client_order_id == cid).with_for_update()
            )
            if order is None:
                raise ValidationError(f"no order with client_order_id {client_order_id!r}")
            if session.get(OrderEvent, event) is not None:
                return False
            before = _order_state(order)
            after = advance(before, update)
            changed = after is not before
            session.add(
                OrderEvent(
                    event_id=event,
                    client_order_id=cid,
                    status=update.status.value,
                    filled_quantity=update.filled_quantity,
                    avg_price=update.avg_price,
                    broker_order_id=update.broker_order_id,
                    reason=update.reason,
                    broker_at=update.broker_at,
                    broker_sequence=update.sequence,
                    received_at=_utc(None),
                    applied=changed,
                )
            )
            if changed:
                order.status = after.status.value
                order.filled_quantity = after.filled_quantity
                order.avg_price = after.avg_price
                order.broker_order_id = after.broker_order_id
                order.reason = after.reason
                order.broker_updated_at = after.broker_at
                order.broker_sequence = after.broker_sequence
                order.updated_at = _utc(None)
            return changed

    def order_events(self, client_order_id: str) -> list[OrderEvent]:
        """Every broker update of an order as received, in broker order."""
        with self.reading() as session:
            stmt = (
                select(OrderEvent)
                .where(OrderEvent.client_order_id == client_order_id_of(client_order_id))
                .order_by(OrderEvent.broker_at, OrderEvent.broker_sequence, OrderEvent.received_at)
            )
            return list(session.scalars(stmt))

    def record_fill(
        self,
        *,
        execution_id: str,
        client_order_id: str,
        symbol: str,
        side: str,
        quantity: float,
        price: float,
        filled_at: datetime,
        fee: float = 0.0,
        broker: str = "paper",
        external: bool = False,
    ) -> bool:
        """Record a broker execution once per `execution_id` and apply it to the position ledger
        of its order's strategy, in one transaction; False for a repeat report. `external`:
        imported from the broker's report by reconciliation."""
        values = _fill_row(
            execution_id=execution_id,
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            price=price,
            filled_at=filled_at,
            fee=fee,
            broker=broker,
            external=external,
        )
        with self.session() as session:
            # The unique index on execution_id does this on plain tables; a hypertable can only
            # be unique on (execution_id, filled_at), so check the id itself as well.
            seen = select(Fill.execution_id).where(Fill.execution_id == values["execution_id"])
            if session.scalar(seen.limit(1)) is not None:
                return False
            order = session.execute(
                select(Order.strategy, Order.symbol, Order.side).where(
                    Order.client_order_id == values["client_order_id"]
                )
            ).first()
            if order is not None and (order.symbol, order.side) != (
                values["symbol"],
                values["side"],
            ):
                raise ValidationError(
                    f"fill {values['execution_id']} is a {values['side']} of {values['symbol']}, "
                    f"its order {values['client_order_id']} a {order.side} of {order.symbol}"
                )
            strategy = None if order is None else order.strategy
            if not self._insert_ignore(session, Fill, values):
                return False
            self._insert_ignore(session, LedgerEntry, _ledger_row(values, strategy))
            return True

    def fills(self, client_order_id: str) -> list[Fill]:
        """The fills of one order, oldest first."""
        stmt = (
            select(Fill)
            .where(Fill.client_order_id == client_order_id_of(client_order_id))
            .order_by(Fill.filled_at, Fill.execution_id)
        )
        with self.reading() as session:
            return list(session.scalars(stmt))

    def open_orders(self, *, broker: str | None = None, symbol: str | None = None) -> list[Order]:
        """Orders still working (not filled, canceled, rejected or expired), oldest first."""
        stmt = (
            select(Order)
            .where(Order.status.in_(_OPEN_ORDER_STATUSES))
            .order_by(Order.created_at, Order.id)
        )
        if broker is not None:
            stmt = stmt.where(Order.broker == _word(broker, "broker"))
        if symbol is not None:
            stmt = stmt.where(Order.symbol == validate_symbol(symbol))
        with self.reading() as session:
            return list(session.scalars(stmt))

    def fill_totals(self, broker: str) -> dict[str, FillTotals]:
        """Per symbol, what `broker`'s fills add up to: net quantity, net cash and fees paid.

        An account kept in the records is these totals plus its starting cash, so it is the same
        after a restart as before. Read from `fill_totals`, which the database keeps as fills
        are written (cash leaves the account on a buy and comes in on a sell), so the read does
        not grow with the history of fills.
        """
        stmt = (
            select(FillTotal.symbol, FillTotal.quantity, FillTotal.cash_flow, FillTotal.fees)
            .where(FillTotal.broker == _word(broker, "broker"))
            .order_by(FillTotal.symbol)
        )
        with self.reading() as session:
            return {
                symbol: FillTotals(float(quantity), float(cash_flow), float(fees))
                for symbol, quantity, cash_flow, fees in session.execute(stmt)
            }

    def record_trade(
        self,
        *,
        execution_id: str,
        client_order_id: str,
        correlation_id: str,
        symbol: str,
        side: str,
        quantity: float,
        price: float,
        executed_at: datetime,
        market_data_message_id: str | None = None,
        raw_signal_id: str | None = None,
        modified_signal_id: str | None = None,
        intent_id: str | None = None,
        strategy: str | None = None,
    ) -> bool:
        """Record a filled order with its attribution chain, once per `execution_id`."""
        values = _trade_row(
            execution_id=execution_id,
            client_order_id=client_order_id,
            correlation_id=correlation_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            price=price,
            executed_at=executed_at,
            market_data_message_id=market_data_message_id,
            raw_signal_id=raw_signal_id,
            modified_signal_id=modified_signal_id,
            intent_id=intent_id,
            strategy=strategy,
        )
        with self.session() as session:
            return self._insert_ignore(session, Trade, values)

    def attribution(
        self,
        *,
        correlation_id: str | None = None,
        signal_id: str | None = None,
        execution_id: str | None = None,
    ) -> list[Attribution]:
        """Trades found by correlation id, signal id (raw or modified) or execution id, each
        with its order, fill and the outcome recorded for its raw signal; oldest first."""
        given = [v for v in (correlation_id, signal_id, execution_id) if v is not None]
        if len(given) != 1:
            raise ValidationError("pass exactly one of correlation_id, signal_id, execution_id")
        stmt = (
            select(Trade, Order, Fill, SignalOutcome)
            .join(Order, Order.client_order_id == Trade.client_order_id)
            .outerjoin(Fill, Fill.execution_id == Trade.execution_id)
            .outerjoin(SignalOutcome, SignalOutcome.signal_id == Trade.raw_signal_id)
            .order_by(Trade.executed_at, Trade.id)
        )
        if correlation_id is not None:
            stmt = stmt.where(Trade.correlation_id == _ident(correlation_id, "correlation_id"))
        elif signal_id is not None:
            sid = _ident(signal_id, "signal_id")
            stmt = stmt.where((Trade.raw_signal_id == sid) | (Trade.modified_signal_id == sid))
        else:
            stmt = stmt.where(Trade.execution_id == _ident(execution_id, "execution_id"))
        with self.reading() as session:
            return [Attribution(t, o, f, s) for t, o, f, s in session.execute(stmt)]

    def trade_chains_of(self, execution_ids: Iterable[str]) -> dict[str, TradeChainRow]:
        """The trade of each of these execution ids the records hold, with its order, as plain
        values by execution id, in one query: what TCA needs of a fill's attribution chain,
        without building four objects per fill."""
        ids = list({_ident(e, "execution_id") for e in execution_ids})
        if not ids:
            return {}
        with self.reading() as session:
            rows = session.execute(_TRADE_CHAINS, {"ids": ids})
            return {row.trade.execution_id: row for row in rows}

    # ---- reconciliation: the records beside a broker's report --------------------------------

    def broker_orders(self, broker: str, *, since: datetime) -> list[Order]:
        """`broker`'s orders still working or changed at or after `since`, oldest first."""
        stmt = (
            select(Order)
            .where(
                Order.broker == _word(broker, "broker"),
                Order.status.in_(_OPEN_ORDER_STATUSES) | (Order.updated_at >= _utc(since)),
            )
            .order_by(Order.created_at, Order.id)
        )
        with self.reading() as session:
            return list(session.scalars(stmt))

    def filled_so_far(self, client_order_id: str) -> tuple[float, float]:
        """(quantity, notional) of the fills recorded for an order: what a broker that derives
        fills from cumulative quantities must not report again."""
        stmt = select(
            func.coalesce(func.sum(Fill.quantity), 0.0),
            func.coalesce(func.sum(Fill.quantity * Fill.price), 0.0),
        ).where(Fill.client_order_id == client_order_id_of(client_order_id))
        with self.reading() as session:
            quantity, notional = session.execute(stmt).one()
        return float(quantity), float(notional)

    def ledger_positions(self, broker: str) -> dict[str, float]:
        """Per symbol, the signed position the ledger holds from the fills of `broker`'s
        orders (every strategy and external orders together), flat symbols left out."""
        stmt = (
            select(LedgerEntry.symbol, func.sum(LedgerEntry.signed_quantity))
            .join(Order, Order.client_order_id == LedgerEntry.client_order_id)
            .where(Order.broker == _word(broker, "broker"))
            .group_by(LedgerEntry.symbol)
            .order_by(LedgerEntry.symbol)
        )
        with self.reading() as session:
            totals = {symbol: float(q) for symbol, q in session.execute(stmt)}
        return {s: q for s, q in totals.items() if not math.isclose(q, 0.0, abs_tol=1e-12)}

    # ---- positions ------------------------------------------------------------------------

    def snapshot_positions(
        self,
        positions: Iterable[PositionUpdate],
        *,
        account: str = "paper",
        at: datetime | None = None,
    ) -> int:
        """Store the book at one instant (the positions the Execution stage reported);
        writing the same instant again replaces it."""
        when = _utc(at)
        rows = [
            {
                "snapshot_at": when,
                "account": _word(account, "account"),
                "symbol": validate_symbol(p.symbol),
                "quantity": _finite(p.quantity, "quantity"),
                "avg_price": _finite(p.avg_price, "avg_price"),
                "mark_price": _finite_or_none(p.mark_price, "mark_price"),
                "unrealized_pnl": _finite(p.unrealized_pnl, "unrealized_pnl"),
                "realized_pnl": _finite(p.realized_pnl, "realized_pnl"),
            }
            for p in positions
        ]
        if not rows:
            return 0
        keys = ["snapshot_at", "account", "symbol"]
        with self.session() as session:
            if self.engine.dialect.name == "postgresql":
                pg = pg_insert(PositionSnapshot)
                stmt = pg.on_conflict_do_update(
                    index_elements=keys,
                    set_={c: pg.excluded[c] for c in rows[0] if c not in keys},
                )
                session.execute(stmt, rows)
            else:
                lite = sqlite_insert(PositionSnapshot)
                session.execute(
                    lite.on_conflict_do_update(
                        index_elements=keys,
                        set_={c: lite.excluded[c] for c in rows[0] if c not in keys},
                    ),
                    rows,
                )
        return len(rows)

    def latest_positions(self, account: str = "paper") -> list[PositionSnapshot]:
        """The most recent snapshot of `account`, one row per symbol."""
        with self.reading() as session:
            latest = (
                select(PositionSnapshot.snapshot_at)
                .where(PositionSnapshot.account == account)
                .order_by(PositionSnapshot.snapshot_at.desc())
                .limit(1)
                .scalar_subquery()
            )
            stmt = (
                select(PositionSnapshot)
                .where(PositionSnapshot.account == account, PositionSnapshot.snapshot_at == latest)
                .order_by(PositionSnapshot.symbol)
            )
            return list(session.scalars(stmt))

    def pnl_history(
        self, account: str = "paper", *, limit: int = 1_000
    ) -> list[tuple[datetime, float]]:
        """The book's P&L at each of the `limit` latest snapshot instants of `account`, oldest
        first: realised (net of fees) plus unrealised over every symbol, since each snapshot
        holds the whole book. With the starting cash it is the account's equity history."""
        if limit < 1:
            raise ValidationError(f"limit must be at least 1, got {limit}")
        pnl = func.sum(
            func.coalesce(PositionSnapshot.realized_pnl, 0.0)
            + func.coalesce(PositionSnapshot.unrealized_pnl, 0.0)
        )
        stmt = (
            select(PositionSnapshot.snapshot_at, pnl)
            .where(PositionSnapshot.account == _word(account, "account"))
            .group_by(PositionSnapshot.snapshot_at)
            .order_by(PositionSnapshot.snapshot_at.desc())
            .limit(limit)
        )
        with self.session() as session:
            rows = session.execute(stmt).all()
        return [(at, float(total or 0.0)) for at, total in reversed(rows)]

    # ---- position ledger ------------------------------------------------------------------

    def net_quantity(self, strategy: str | None, symbol: str) -> float:
        """The signed position in `symbol` from the ledger: positive long, negative short.

        `strategy=None` sums across strategies. Every fill counts once (by execution id).
        Read from `position_totals`, the ledger's sums the database keeps as entries are written.
        """
        where = {"symbol": validate_symbol(symbol)}
        stmt = _ACCOUNT_POSITION
        if strategy is not None:
            stmt, where["strategy"] = _STRATEGY_POSITION, canonical_name(strategy, "strategy")
        with self.reading() as session:
            return float(session.scalar(stmt, where) or 0.0)

    def strategy_books(
        self, pairs: Iterable[tuple[str, str]], *, client_order_ids: Iterable[str] = ()
    ) -> tuple[dict[tuple[str, str], StrategyBook], set[str]]:
        """Each (strategy, symbol)'s `StrategyBook`, and which of `client_order_ids` the records
        hold, all from one snapshot: what a pre-trade check sizes and limits an order on, with
        the orders it sent since its last look that are now recorded."""
        books: dict[tuple[str, str], StrategyBook] = {}
        with self.reading() as session:
            cids = list(client_order_ids)
            recorded = set(session.scalars(_KNOWN_ORDERS, {"ids": cids})) if cids else set()
            for strategy, symbol in pairs:
                where = {"strategy": strategy, "symbol": symbol}
                working = sum(
                    (quantity - filled) * (1 if side == Side.BUY.value else -1)
                    for side, quantity, filled in session.execute(_WORKING_ORDERS, where)
                )
                books[strategy, symbol] = StrategyBook(
                    held=float(session.scalar(_STRATEGY_POSITION, where) or 0.0),
                    working=working,
                    account=float(session.scalar(_ACCOUNT_POSITION, {"symbol": symbol}) or 0.0),
                )
        return books, recorded

    def ledger_amounts(self) -> list[Row[Any]]:
        """The whole ledger's `execution_id`, `symbol`, `signed_quantity`, `price` and `fee`,
        named as on `LedgerEntry`, in `ledger`'s order, as plain rows read from one snapshot:
        what a book is rebuilt from (Positions does it on a schedule, and the ledger only
        grows)."""
        stmt = select(
            LedgerEntry.execution_id,
            LedgerEntry.symbol,
            LedgerEntry.signed_quantity,
            LedgerEntry.price,
            LedgerEntry.fee,
        ).order_by(LedgerEntry.executed_at, LedgerEntry.execution_id)
        with self.reading() as session:
            return list(session.execute(stmt))

    def ledger(
        self, *, strategy: str | None = None, symbol: str | None = None
    ) -> list[LedgerEntry]:
        """Ledger entries, oldest first, optionally of one strategy and/or one symbol."""
        stmt = select(LedgerEntry).order_by(LedgerEntry.executed_at, LedgerEntry.execution_id)
        if strategy is not None:
            stmt = stmt.where(LedgerEntry.strategy == canonical_name(strategy, "strategy"))
        if symbol is not None:
            stmt = stmt.where(LedgerEntry.symbol == validate_symbol(symbol))
        with self.session() as session:
            return list(session.scalars(stmt))

    # ---- the pipeline's messages (kept past the bus's trimming) ----------------------------

    def record_signal(self, message: RawSignalMessage | ModifiedSignalMessage) -> bool:
        """Keep a raw or modified signal; False when this message id is already kept."""
        return self._keep(message)

    def record_intent(self, message: IntentMessage) -> bool:
        """Keep an intent; False when this message id is already kept."""
        return self._keep(message)

    def record_risk_event(self, message: RiskEventMessage) -> bool:
        """Keep a risk event; False when this message id is already kept."""
        return self._keep(message)

    def record_audit(self, message: AuditMessage) -> bool:
        """Keep an audit entry; False when this message id is already kept."""
        return self._keep(message)

    def signal(self, message_id: str) -> SignalRecord | None:
        """The kept signal (raw or modified) with this message id, or None."""
        with self.reading() as session:
            return session.get(SignalRecord, _ident(message_id, "message_id"))

    def signals(self, *, correlation_id: str | None = None) -> list[SignalRecord]:
        """Kept signals, oldest first; all of one chain with `correlation_id`."""
        return self._kept(SignalRecord, correlation_id)

    def intents(self, *, correlation_id: str | None = None) -> list[IntentRecord]:
        """Kept intents, oldest first; all of one chain with `correlation_id`."""
        return self._kept(IntentRecord, correlation_id)

    def risk_events(self, *, correlation_id: str | None = None) -> list[RiskEventRecord]:
        """Kept risk events, oldest first; all of one chain with `correlation_id`."""
        return self._kept(RiskEventRecord, correlation_id)

    def audit_trail(self, *, correlation_id: str | None = None) -> list[AuditRecord]:
        """Kept audit entries, oldest first; all of one chain with `correlation_id`."""
        return self._kept(AuditRecord, correlation_id)

    def _keep(self, message: KeptMessage) -> bool:
        model, values = _kept_row(message)
        with self.session() as session:
            return self._insert_ignore(session, model, values)

    def _kept(self, model: type[_KeptT], correlation_id: str | None) -> list[_KeptT]:
        table = cast(Table, model.__table__)
        stmt = select(model).order_by(table.c.produced_at, table.c.message_id)
        if correlation_id is not None:
            stmt = stmt.where(table.c.correlation_id == _ident(correlation_id, "correlation_id"))
        with self.reading() as session:
            return list(session.scalars(stmt))

    # ---- backtests ------------------------------------------------------------------------

    def start_backtest(
        self,
        *,
        strategy: str,
        parameters: dict[str, Any],
        data_start: datetime,
        data_end: datetime,
        data_hash: str,
        code_version: str,
        kind: str = "backtest",
        strategy_hash: str | None = None,
        data_source: str | None = None,
        engine: str | None = None,
    ) -> uuid.UUID:
        """Record a backtest as running and return its id; enough to reproduce it later."""
        start, end = _utc(data_start), _utc(data_end)
        if start >= end:
            raise ValidationError("backtest data_start must be before data_end")
        run = BacktestRun(
            id=uuid.uuid4(),
            strategy=_ident(strategy, "strategy", limit=128),
            state="running",
            kind=_choice(kind, BACKTEST_KINDS, "kind"),
            parameters=_json(parameters, "parameters"),
            data_start=start,
            data_end=end,
            data_hash=_ident(data_hash, "data_hash", limit=128),
            code_version=_ident(code_version, "code_version"),
            strategy_hash=_ident(strategy_hash, "strategy_hash", optional=True),
            data_source=_text_or_none(data_source, "data_source"),
            engine=_ident(engine, "engine", optional=True, limit=16),
            created_at=_utc(None),
            started_at=_utc(None),
        )
        with self.session() as session:
            session.add(run)
        return run.id

    def finish_backtest(
        self,
        run_id: uuid.UUID,
        *,
        results: dict[str, Any] | None = None,
        error: str | None = None,
        equity_curve: bytes | None = None,
    ) -> BacktestRun:
        """Close a running backtest: succeeded with `results` (and its equity curve, as bytes),
        or failed with `error`."""
        if (results is None) == (error is None):
            raise ValidationError("finish a backtest with either results or an error")
        if equity_curve is not None and not isinstance(equity_curve, bytes):
            raise ValidationError("equity_curve must be bytes")
        with self.session() as session:
            run = session.get(BacktestRun, run_id, with_for_update=True)
            if run is None:
                raise ValidationError(f"no backtest run {run_id}")
            if run.state in BACKTEST_STATES[2:]:
                raise ValidationError(f"backtest run {run_id} already {run.state}")
            run.state = "failed" if error is not None else "succeeded"
            run.results = None if results is None else _json(results, "results")
            run.error = error
            run.equity_curve = equity_curve
            run.finished_at = _utc(None)
            return run

    def backtest(self, run_id: uuid.UUID) -> BacktestRun:
        with self.session() as session:
            run = session.get(BacktestRun, run_id)
            if run is None:
                raise ValidationError(f"no backtest run {run_id}")
            return run

    def backtests(
        self, *, strategy: str | None = None, kind: str | None = None, limit: int = 100
    ) -> list[BacktestRun]:
        """Backtest runs, newest first (without their equity curves: `backtest_equity`)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"limit must be a positive integer, got {limit!r}")
        stmt = select(BacktestRun).order_by(BacktestRun.created_at.desc()).limit(limit)
        if strategy is not None:
            stmt = stmt.where(BacktestRun.strategy == strategy)
        if kind is not None:
            stmt = stmt.where(BacktestRun.kind == _choice(kind, BACKTEST_KINDS, "kind"))
        with self.session() as session:
            return list(session.scalars(stmt))

    def backtest_equity(self, run_id: uuid.UUID) -> bytes | None:
        """The equity curve a run was finished with (None when it kept none)."""
        with self.session() as session:
            found = session.execute(
                select(BacktestRun.equity_curve).where(BacktestRun.id == run_id)
            ).first()
            if found is None:
                raise ValidationError(f"no backtest run {run_id}")
            return found[0]

    # ---- policy profiles ------------------------------------------------------------------

    def profiles(self) -> list[PolicyProfile]:
        """Every policy profile, most conservative (smallest max position) first."""
        with self.reading() as session:
            stmt = select(PolicyProfile).order_by(PolicyProfile.max_position_pct)
            return list(session.scalars(stmt))

    def profile(self, name: str) -> PolicyProfile:
        with self.reading() as session:
            found = session.get(PolicyProfile, name)
            if found is None:
                raise ValidationError(f"no policy profile named {name!r}")
            return found

    # ---- system config --------------------------------------------------------------------

    def set_config(self, key: str, value: Any, *, changed_by: str, reason: str) -> bool:
        """Set a live-tunable value and keep the change in its history; False if unchanged."""
        key = _config_key(key)
        value = _json(value, key)
        if value is None:
            raise ValidationError(f"config {key} cannot be set to null")
        if not reason.strip():
            raise ValidationError("say why the config changes (reason)")
        who = _ident(changed_by, "changed_by")
        now = _utc(None)
        with self.session() as session:
            current = session.get(SystemConfig, key, with_for_update=True)
            old = None if current is None else current.value
            if current is not None and old == value:
                return False
            if current is None:
                session.add(SystemConfig(key=key, value=value, updated_at=now, updated_by=who))
            else:
                current.value, current.updated_at, current.updated_by = value, now, who
            session.add(
                ConfigChange(
                    key=key,
                    old_value=old,
                    new_value=value,
                    changed_by=who,
                    changed_at=now,
                    reason=reason,
                )
            )
        return True

    def get_config(self, key: str, default: Any = None) -> Any:
        with self.reading() as session:
            found = session.get(SystemConfig, _config_key(key))
            return default if found is None else found.value

    def config_history(self, key: str) -> list[ConfigChange]:
        """Every change of `key`, oldest first."""
        with self.session() as session:
            stmt = (
                select(ConfigChange)
                .where(ConfigChange.key == _config_key(key))
                .order_by(ConfigChange.changed_at, ConfigChange.id)
            )
            return list(session.scalars(stmt))

    # ---- signal outcomes (TCA) ------------------------------------------------------------

    def record_signal_outcome(
        self,
        *,
        signal_id: str,
        signal_at: datetime,
        symbol: str,
        outcome: str,
        slippage_bps: float | None = None,
        pnl: float | None = None,
        holding_seconds: float | None = None,
        execution_id: str | None = None,
        closed_at: datetime | None = None,
    ) -> None:
        """Record (or revise, when the position closes later) what became of a signal."""
        self.record_signal_outcomes(
            [
                {
                    "signal_id": signal_id,
                    "signal_at": signal_at,
                    "symbol": symbol,
                    "outcome": outcome,
                    "slippage_bps": slippage_bps,
                    "pnl": pnl,
                    "holding_seconds": holding_seconds,
                    "execution_id": execution_id,
                    "closed_at": closed_at,
                }
            ]
        )

    def record_signal_outcomes(self, outcomes: Iterable[Mapping[str, Any]]) -> None:
        """`record_signal_outcome` for each of `outcomes` (its keyword arguments), with one
        statement for all of them."""
        now = _utc(None)  # one time for the statement's rows
        rows = [_signal_outcome_row(**o, recorded_at=now) for o in outcomes]
        if not rows:
            return
        with self.session() as session:
            self._upsert(session, SignalOutcome, rows, keys=["signal_id", "signal_at"])

    # ---- transaction costs (the tca service) ----------------------------------------------

    def record_fill_cost(
        self,
        *,
        execution_id: str,
        client_order_id: str,
        broker: str,
        symbol: str,
        side: str,
        quantity: float,
        price: float,
        fee: float,
        filled_at: datetime,
        correlation_id: str | None = None,
        signal_id: str | None = None,
        strategy: str | None = None,
        arrival_price: float | None = None,
        arrival_at: datetime | None = None,
        slippage_bps: float | None = None,
        shadow_quantity: float | None = None,
        shadow_price: float | None = None,
        shadow_fee: float | None = None,
        shadow_price_diff_bps: float | None = None,
    ) -> bool:
        """Keep a fill's costs once per `execution_id`; False when they are already kept."""
        values = _fill_cost_row(
            execution_id=execution_id,
            client_order_id=client_order_id,
            broker=broker,
            symbol=symbol,
            side=side,
            quantity=quantity,
            price=price,
            fee=fee,
            filled_at=filled_at,
            correlation_id=correlation_id,
            signal_id=signal_id,
            strategy=strategy,
            arrival_price=arrival_price,
            arrival_at=arrival_at,
            slippage_bps=slippage_bps,
            shadow_quantity=shadow_quantity,
            shadow_price=shadow_price,
            shadow_fee=shadow_fee,
            shadow_price_diff_bps=shadow_price_diff_bps,
        )
        with self.session() as session:
            return self._insert_ignore(session, FillCost, values)

    def record_fill_costs(self, costs: Iterable[Mapping[str, Any]]) -> None:
        """`record_fill_cost` for each of `costs` (its keyword arguments), once per execution
        id, with one statement for all of them."""
        now = _utc(None)  # one time for the statement's rows
        rows = [_fill_cost_row(**c, recorded_at=now) for c in costs]
        if not rows:
            return

        def keep() -> Executable:
            insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
            return insert(cast(Table, FillCost.__table__)).on_conflict_do_nothing()

        with self.session() as session:
            self._write_many(session, "record_fill_costs", keep, rows)

    def fill_costs(
        self, *, client_order_id: str | None = None, signal_id: str | None = None
    ) -> list[FillCostRow]:
        """Kept fill costs, in fill order; those of one order or one signal when given."""
        return self.fill_costs_of(
            client_order_ids=None if client_order_id is None else [client_order_id],
            signal_ids=None if signal_id is None else [signal_id],
        )

    def fill_costs_of(
        self,
        *,
        client_order_ids: Iterable[str] | None = None,
        signal_ids: Iterable[str] | None = None,
    ) -> list[FillCostRow]:
        """Kept fill costs of any of these orders and of any of these signals (all when neither
        is given), in fill order, in one query."""
        table = cast(Table, FillCost.__table__)
        stmt = select(table).order_by(FillCost.filled_at, FillCost.execution_id)
        if client_order_ids is not None:
            cids = list({client_order_id_of(c) for c in client_order_ids})
            stmt = stmt.where(FillCost.client_order_id.in_(cids))
        if signal_ids is not None:
            sids = list({_ident(s, "signal_id") for s in signal_ids})
            stmt = stmt.where(FillCost.signal_id.in_(sids))
        with self.reading() as session:
            return list(session.execute(stmt))

    def fill_amounts_of(
        self, *, client_order_ids: Iterable[str] = (), signal_ids: Iterable[str] = ()
    ) -> list[FillAmountRow]:
        """The ids and amounts of the kept fill costs of any of these orders or of any of these
        signals, in fill order, in one query (no timestamps: those are what a row costs most to
        load)."""
        cids = list({client_order_id_of(c) for c in client_order_ids})
        sids = list({_ident(s, "signal_id") for s in signal_ids})
        if not cids and not sids:
            return []
        with self.reading() as session:
            return list(session.execute(_FILL_AMOUNTS, {"cids": cids, "sids": sids}))

    def record_order_cost(
        self,
        *,
        client_order_id: str,
        strategy: str | None,
        broker: str,
        symbol: str,
        side: str,
        quantity: float,
        filled_quantity: float,
        arrival_price: float,
        avg_price: float | None,
        last_price: float,
        fees: float,
        execution_cost: float,
        opportunity_cost: float,
        shortfall: float,
        shortfall_bps: float,
    ) -> None:
        """Keep (or revise, after a further fill) an order's implementation shortfall."""
        self.record_order_costs(
            [
                {
                    "client_order_id": client_order_id,
                    "strategy": strategy,
                    "broker": broker,
                    "symbol": symbol,
                    "side": side,
                    "quantity": quantity,
                    "filled_quantity": filled_quantity,
                    "arrival_price": arrival_price,
                    "avg_price": avg_price,
                    "last_price": last_price,
                    "fees": fees,
                    "execution_cost": execution_cost,
                    "opportunity_cost": opportunity_cost,
                    "shortfall": shortfall,
                    "shortfall_bps": shortfall_bps,
                }
            ]
        )

    def record_order_costs(self, costs: Iterable[Mapping[str, Any]]) -> None:
        """`record_order_cost` for each of `costs` (its keyword arguments), with one statement
        for all of them; the last of an order's wins."""
        now = _utc(None)  # one time for the statement's rows
        rows = {
            r["client_order_id"]: r for r in (_order_cost_row(**c, updated_at=now) for c in costs)
        }
        if not rows:
            return
        with self.session() as session:
            self._upsert(session, OrderCost, list(rows.values()), keys=["client_order_id"])

    def order_costs(self) -> list[OrderCost]:
        """Every order's shortfall, by client order id."""
        with self.reading() as session:
            return list(session.scalars(select(OrderCost).order_by(OrderCost.client_order_id)))

    def open_signal_horizons(
        self,
        *,
        signal_id: str,
        horizons: Iterable[int],
        strategy: str,
        symbol: str,
        timeframe: str,
        signal_at: datetime,
        strength: float,
        side: str,
        quantity: float,
        avg_price: float,
        fees: float,
        arrival_price: float,
    ) -> int:
        """Open a filled signal at each horizon (bars), or bring the still-open ones up to date
        with its fills so far (a later partial fill); closed horizons stay as they closed."""
        return self.open_signals(
            [
                {
                    "signal_id": signal_id,
                    "horizons": horizons,
                    "strategy": strategy,
                    "symbol": symbol,
                    "timeframe": timeframe,
                    "signal_at": signal_at,
                    "strength": strength,
                    "side": side,
                    "quantity": quantity,
                    "avg_price": avg_price,
                    "fees": fees,
                    "arrival_price": arrival_price,
                }
            ]
        )

    def open_signals(self, openings: Iterable[Mapping[str, Any]]) -> int:
        """`open_signal_horizons` for each of `openings` (its keyword arguments), with one
        statement for all of them; the last opening of a signal wins. The rows written."""
        now = _utc(None)  # one time for the statement's rows
        rows = {
            (r["signal_id"], r["horizon_bars"]): r
            for opening in openings
            for r in _signal_horizon_rows(**opening, opened_at=now)
        }
        if not rows:
            return 0
        with self.session() as session:
            self._upsert(
                session,
                SignalHorizon,
                list(rows.values()),
                keys=["signal_id", "horizon_bars"],
                set_columns=["quantity", "avg_price", "fees"],
                where=SignalHorizon.status == "open",
            )
        return len(rows)

    def signal_horizons(
        self,
        *,
        status: str | None = None,
        strategy: str | None = None,
        horizon_bars: int | None = None,
        signal_id: str | None = None,
        latest: int | None = None,
        signal_ids: Iterable[str] | None = None,
    ) -> list[SignalHorizonRow]:
        """Signal horizons in signal order (oldest first); with `latest`, only the latest N;
        with `signal_ids`, those of any of these signals."""
        stmt = select(cast(Table, SignalHorizon.__table__))
        if status is not None:
            stmt = stmt.where(
                SignalHorizon.status == _choice(status, SIGNAL_HORIZON_STATES, "status")
            )
        if strategy is not None:
            stmt = stmt.where(SignalHorizon.strategy == canonical_name(strategy, "strategy"))
        if horizon_bars is not None:
            stmt = stmt.where(SignalHorizon.horizon_bars == _horizon(horizon_bars))
        if signal_id is not None:
            stmt = stmt.where(SignalHorizon.signal_id == _ident(signal_id, "signal_id"))
        if signal_ids is not None:
            ids = list({_ident(s, "signal_id") for s in signal_ids})
            stmt = stmt.where(SignalHorizon.signal_id.in_(ids))
        order = (SignalHorizon.signal_at, SignalHorizon.signal_id, SignalHorizon.horizon_bars)
        if latest is not None:
            stmt = stmt.order_by(*(c.desc() for c in order)).limit(_horizon(latest))
        else:
            stmt = stmt.order_by(*order)
        with self.reading() as session:
            found = list(session.execute(stmt))
        return found[::-1] if latest is not None else found

    def horizons_of_open_signals(self) -> list[SignalHorizonRow]:
        """Every horizon, open or not, of each signal with one still open, in signal order:
        what the tca service's timer closes, and the rest it concludes a signal from. Only the
        columns it needs (all but `strength`, `exit_price`, `forward_return`, `closed_at`):
        it reads every horizon of every filled signal once at least."""
        with self.reading() as session:
            return list(session.execute(_HORIZONS_OF_OPEN_SIGNALS))

    def signals_to_conclude(self, limit: int = 100) -> list[str]:
        """Signals none of whose horizons is open any more but whose outcome is not recorded
        yet, oldest first: what the tca service concludes next (again after a crash)."""
        stmt = (
            select(SignalHorizon.signal_id)
            .outerjoin(SignalOutcome, SignalOutcome.signal_id == SignalHorizon.signal_id)
            .where(SignalOutcome.signal_id.is_(None))
            .group_by(SignalHorizon.signal_id)
            .having(func.sum(case((SignalHorizon.status == "open", 1), else_=0)) == 0)
            .order_by(func.min(SignalHorizon.signal_at), SignalHorizon.signal_id)
            .limit(_horizon(limit))
        )
        with self.reading() as session:
            return list(session.scalars(stmt))

    def close_signal_horizon(
        self,
        signal_id: str,
        horizon_bars: int,
        *,
        exit_at: datetime,
        exit_price: float,
        forward_return: float,
        pnl: float,
    ) -> bool:
        """Close an open horizon with its exit bar and result; False if it was not open."""
        return self._end_signal_horizons(
            signal_id,
            horizon_bars,
            status="done",
            exit_at=_utc(exit_at),
            exit_price=_positive(exit_price, "exit_price"),
            forward_return=_finite(forward_return, "forward_return"),
            pnl=_finite(pnl, "pnl"),
        )

    def close_signal_horizons(self, closes: Iterable[Mapping[str, Any]]) -> None:
        """`close_signal_horizon` for each of `closes` (its arguments by name), with one
        statement for all of them; a horizon no longer open is left as it is."""
        now = _utc(None)
        rows = [
            {
                "b_signal_id": _ident(c["signal_id"], "signal_id"),
                "b_horizon_bars": _horizon(c["horizon_bars"]),
                "b_closed_at": now,
                "b_exit_at": _utc(c["exit_at"]),
                "b_exit_price": _positive(c["exit_price"], "exit_price"),
                "b_forward_return": _finite(c["forward_return"], "forward_return"),
                "b_pnl": _finite(c["pnl"], "pnl"),
            }
            for c in closes
        ]
        if not rows:
            return

        def close() -> Executable:
            table = cast(Table, SignalHorizon.__table__)
            return (
                update(table)
                .where(
                    table.c.signal_id == bindparam("b_signal_id"),
                    table.c.horizon_bars == bindparam("b_horizon_bars"),
                    table.c.status == "open",
                )
                .values(
                    status="done",
                    closed_at=bindparam("b_closed_at"),
                    exit_at=bindparam("b_exit_at"),
                    exit_price=bindparam("b_exit_price"),
                    forward_return=bindparam("b_forward_return"),
                    pnl=bindparam("b_pnl"),
                )
            )

        with self.session() as session:
            self._write_many(session, "close_signal_horizons", close, rows)

    def expire_signal_horizons(self, signal_id: str) -> bool:
        """Mark a signal's open horizons expired (their bars never came); False if none was."""
        return self._end_signal_horizons(signal_id, None, status="expired")

    def _end_signal_horizons(
        self, signal_id: str, horizon_bars: int | None, *, status: str, **values: Any
    ) -> bool:
        stmt = (
            update(SignalHorizon)
            .where(
                SignalHorizon.signal_id == _ident(signal_id, "signal_id"),
                SignalHorizon.status == "open",
            )
            .values(status=status, closed_at=_utc(None), **values)
        )
        if horizon_bars is not None:
            stmt = stmt.where(SignalHorizon.horizon_bars == _horizon(horizon_bars))
        with self.session() as session:
            ended = session.execute(stmt.returning(SignalHorizon.horizon_bars)).all()
        return bool(ended)

    def _upsert(
        self,
        session: Session,
        model: type[Base],
        rows: list[dict[str, Any]],
        *,
        keys: list[str],
        set_columns: list[str] | None = None,
        where: Any = None,
    ) -> None:
        """INSERT the rows; on a key that exists, set the `set_columns` (default: all but the
        keys) from the new row, where `where` holds."""
        table = cast(Table, model.__table__)
        columns = set_columns or [c for c in rows[0] if c not in keys]

        def upsert() -> Executable:
            insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
            stmt = insert(table)
            return stmt.on_conflict_do_update(
                index_elements=keys,
                set_={c: stmt.excluded[c] for c in columns},
                where=where,
            )

        condition = None if where is None else str(where.compile(compile_kwargs=_LITERALS))
        key = ("upsert", table.name, tuple(keys), tuple(columns), condition)
        self._write_many(session, key, upsert, rows)

    def _write_many(
        self,
        session: Session,
        key: Hashable,
        statement: Callable[[], Executable],
        rows: list[dict[str, Any]],
    ) -> None:
        """Run the write `statement()` once per row of `rows` in one executemany of the driver,
        the statement compiled once per `key` and row keys.

        The pipeline's services write several rows per message (kept messages, trades, fills,
        TCA's costs and horizons); SQLAlchemy's own executemany builds and processes every
        row's parameters in Python at several times the cost of the statement itself. Here each
        row goes to the driver as the column types' bind processors make it, which is what
        SQLAlchemy would send. A statement that needs SQLAlchemy's per-row work (`_ManyWrite.of`
        says None), or rows with differing keys, go through SQLAlchemy."""
        if not rows:
            return
        row_keys = tuple(rows[0])
        cache_key = (key, row_keys)
        if cache_key not in self._many_writes:
            self._many_writes[cache_key] = _ManyWrite.of(statement(), self.engine.dialect, row_keys)
        write = self._many_writes[cache_key]
        first = rows[0].keys()
        if write is None or any(row.keys() != first for row in rows):
            session.execute(statement(), rows)  # rows of differing keys: SQLAlchemy sorts them
            return
        try:
            params = write.parameters(rows)
        except TradeosError:
            raise
        except (KeyError, TypeError, ValueError) as e:  # as SQLAlchemy reports a bad parameter
            raise StatementError(str(e), write.sql, None, e) from e
        session.connection().exec_driver_sql(write.sql, params)

    # ---- batches: many calls, one transaction --------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Every call of this store made on this thread inside the block joins ONE transaction,
        committed when the block ends and rolled back as a whole on an error: a pipeline service
        pays one commit per batch of messages instead of one per call. Every write stays
        idempotent by its key, so a batch re-done after a failure adds nothing twice. A batch
        opened inside another joins it."""
        if getattr(self._batches, "session", None) is not None:
            yield
            return
        with self._translate(), self._sessions.begin() as session:
            self._batches.session = session
            try:
                yield
            finally:
                self._batches.session = None

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only, one consistent snapshot that takes no write lock (SQLite:
        BEGIN DEFERRED under WAL), so a service's reads do not queue behind the other processes'
        writes; inside `batch()`, the batch's own session. A `reading()` inside another joins
        it: a service that reads several things before it writes reads them in one transaction
        (on SQLite, one snapshot)."""
        if getattr(self._batches, "session", None) is not None:
            with self.session() as joined:
                yield joined
            return
        outer: Session | None = getattr(self._batches, "reads", None)
        if outer is not None:
            with self._translate():
                yield outer
            return
        with self._translate(), self._reads.begin() as session:
            self._batches.reads = session
            try:
                yield session
            finally:
                self._batches.reads = None

    def keep_messages(self, messages: Iterable[KeptMessage]) -> None:
        """Keep signals, intents, risk events and audit entries (as `record_signal` and the
        others do, each once per message id) with one statement per table for all of them."""
        by_model: dict[type[Base], list[dict[str, Any]]] = {}
        for message in messages:
            model, values = _kept_row(message)
            by_model.setdefault(model, []).append(values)
        with self.session() as session:
            for model, rows in by_model.items():
                self._insert_ignore_many(session, model, rows)

    def keep_intents(self, messages: Sequence[IntentMessage]) -> None:
        """`keep_messages` of intents, writing only those not kept yet: one read finds the
        kept ones first (Feasibility keeps every intent it clears), so a batch whose intents
        are all kept opens no write transaction and builds no rows."""
        ids = [_ident(m.message_id, "message_id") for m in messages]
        if not ids:
            return
        with self.reading() as session:
            kept = set(session.scalars(_KEPT_INTENTS, {"ids": ids}))
        missing = [m for m in messages if m.message_id not in kept]
        if missing:
            self.keep_messages(missing)

    def record_trades(self, trades: Iterable[Mapping[str, Any]]) -> None:
        """`record_trade` for each of `trades` (its keyword arguments), once per execution id,
        with one statement for all of them."""
        rows = [_trade_row(**t) for t in trades]
        with self.session() as session:
            self._insert_ignore_many(session, Trade, rows)

    def signal_rows_of(self, message_ids: Iterable[str]) -> dict[str, SignalRow]:
        """The kept signals (raw or modified) with these message ids, as plain rows of the
        columns a fill's measure and its order's chain need, in one query."""
        ids = list({_ident(m, "message_id") for m in message_ids})
        if not ids:
            return {}
        with self.reading() as session:
            return {s.message_id: s for s in session.execute(_SIGNAL_ROWS, {"ids": ids})}

    def raw_signal_ids_of(self, message_ids: Iterable[str]) -> dict[str, str | None]:
        """The `raw_signal_id` of each kept signal with these message ids (None for a raw
        signal), in one query: the database reads the one field of each payload, so Execution's
        batch of intents decodes no signal's whole payload to name its raw signal."""
        ids = list({_ident(m, "message_id") for m in message_ids})
        if not ids:
            return {}
        with self.reading() as session:
            return {
                r.message_id: r.raw_signal_id
                for r in session.execute(_RAW_SIGNAL_IDS, {"ids": ids})
            }

    def _insert_ignore_many(
        self, session: Session, model: type[Base], rows: list[dict[str, Any]]
    ) -> None:
        """`_insert_ignore` of many rows in one statement (executemany); every message a
        pipeline service keeps passes here (`_write_many`)."""
        table = cast(Table, model.__table__)

        def insert_ignore() -> Executable:
            insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
            return insert(table).on_conflict_do_nothing()

        self._write_many(session, ("insert_ignore", table.name), insert_ignore, rows)

    def orders_of(self, client_order_ids: Iterable[str]) -> dict[str, Order]:
        """The recorded orders among these client order ids, in one query."""
        cids = list({client_order_id_of(c) for c in client_order_ids})
        if not cids:
            return {}
        with self.reading() as session:
            stmt = select(Order).where(Order.client_order_id.in_(cids))
            return {o.client_order_id: o for o in session.scalars(stmt)}

    def brokers_of(self, client_order_ids: Iterable[str]) -> dict[str, str | None]:
        """The broker of each recorded order among these client order ids (None for an order
        recorded without one), in one query of plain rows."""
        cids = list({client_order_id_of(c) for c in client_order_ids})
        if not cids:
            return {}
        stmt = select(Order.client_order_id, Order.broker).where(Order.client_order_id.in_(cids))
        with self.reading() as session:
            return {row.client_order_id: row.broker for row in session.execute(stmt)}

    def record_fills(self, fills: Iterable[Mapping[str, Any]]) -> list[str]:
        """`record_fill` for each of `fills` (its keyword arguments) with a few statements for
        all of them; the execution ids it added (a fill already recorded is skipped before its
        row is built: a fill reaches Positions after Execution's broker recorded it)."""
        given = list(fills)
        ids = list({_ident(f.get("execution_id"), "execution_id"): None for f in given})
        if not ids:
            return []
        with self.session() as session:
            seen = set(session.scalars(select(Fill.execution_id).where(Fill.execution_id.in_(ids))))
            rows = {
                r["execution_id"]: r
                for r in (_fill_row(**f) for f in given if f["execution_id"] not in seen)
            }
            if not rows:
                return []
            cids = list({r["client_order_id"] for r in rows.values()})
            orders = {
                cid: (strategy, symbol, side)
                for cid, strategy, symbol, side in session.execute(
                    select(Order.client_order_id, Order.strategy, Order.symbol, Order.side).where(
                        Order.client_order_id.in_(cids)
                    )
                )
            }
            ledger: list[dict[str, Any]] = []
            for r in rows.values():
                strategy, symbol, side = orders.get(r["client_order_id"], (None, None, None))
                if symbol is not None and (symbol, side) != (r["symbol"], r["side"]):
                    raise ValidationError(
                        f"fill {r['execution_id']} is a {r['side']} of {r['symbol']}, its order "
                        f"{r['client_order_id']} a {side} of {symbol}"
                    )
                ledger.append(_ledger_row(r, strategy))
            self._insert_ignore_many(session, Fill, _in_totals_order(list(rows.values())))
            self._insert_ignore_many(session, LedgerEntry, _in_totals_order(ledger))
        return list(rows)

    def known_orders(self, client_order_ids: Iterable[str]) -> set[str]:
        """Which of these client order ids the records hold, in one query."""
        cids = [client_order_id_of(c) for c in client_order_ids]
        if not cids:
            return set()
        with self.reading() as session:
            return set(session.scalars(_KNOWN_ORDERS, {"ids": cids}))

    def known_fills(self, execution_ids: Iterable[str]) -> set[str]:
        """Which of these execution ids the records hold, in one query."""
        ids = list({_ident(e, "execution_id"): None for e in execution_ids})
        if not ids:
            return set()
        with self.reading() as session:
            stmt = select(Fill.execution_id).where(Fill.execution_id.in_(ids))
            return set(session.scalars(stmt))

    def record_placed(
        self, placed: Sequence[PlacedOrder], *, known: AbstractSet[str] | None = None
    ) -> list[dict[str, Any]]:
        """New orders with the broker updates and the fills that placed them, written with one
        statement per table for all of them: the rows `record_order`, then `apply_order_update`
        and `record_fill` in the given order, would write one call at a time (the same checks,
        the same `order_state.advance` rule). Returns the orders as they end up. Only for orders
        the records do not hold yet: a client order id already recorded raises
        `ValidationError` (its updates go one by one through `apply_order_update`). The orders are
        returned as the rows written (the columns of `Order`), not as ORM objects: a batch of
        orders needs none of their tracking.

        `known`: the client order ids the records hold as `known_orders` read them in this same
        `batch()`, checked instead of reading them again; an order recorded since that read is
        still refused, by the orders' unique client order id (`StoreError`)."""
        orders: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        fills: list[dict[str, Any]] = []
        ledger: list[dict[str, Any]] = []
        received = _utc(None)
        for p in placed:
            row = _order_row(**p.order)
            cid = row["client_order_id"]
            state = OrderState(quantity=row["quantity"], status=OrderStatus(row["status"]))
            for given in p.updates:
                fields = dict(given)
                event_id = _ident(fields.pop("event_id"), "event_id", limit=128)
                update = _order_update(**fields)
                after = advance(state, update)
                events.append(
                    {
                        "event_id": event_id,
                        "client_order_id": cid,
                        "status": update.status.value,
                        "filled_quantity": update.filled_quantity,
                        "avg_price": update.avg_price,
                        "broker_order_id": update.broker_order_id,
                        "reason": update.reason,
                        "broker_at": update.broker_at,
                        "broker_sequence": update.sequence,
                        "received_at": received,
                        "applied": after is not state,
                    }
                )
                if after is not state:
                    row["updated_at"] = received
                state = after
            row.update(
                status=state.status.value,
                filled_quantity=state.filled_quantity,
                avg_price=state.avg_price,
                broker_order_id=state.broker_order_id,
                reason=state.reason,
                broker_updated_at=state.broker_at,
                broker_sequence=state.broker_sequence,
            )
            orders.append(row)
            for given in p.fills:
                fill = _fill_row(**given)
                if (fill["client_order_id"], fill["symbol"], fill["side"]) != (
                    cid,
                    row["symbol"],
                    row["side"],
                ):
                    raise ValidationError(
                        f"fill {fill['execution_id']} is a {fill['side']} of {fill['symbol']} "
                        f"for {fill['client_order_id']}, placed with order {cid}, a "
                        f"{row['side']} of {row['symbol']}"
                    )
                fills.append(fill)
                ledger.append(_ledger_row(fill, row["strategy"]))
        if not orders:
            return []
        cids = [row["client_order_id"] for row in orders]
        with self.session() as session:
            if known is None:
                held = set(session.scalars(_KNOWN_ORDERS, {"ids": cids}))
            else:
                held = {cid for cid in cids if cid in known}
            if held or len(set(cids)) < len(cids):
                raise ValidationError(
                    f"orders {sorted(held) or cids} are already recorded (or given twice): "
                    "record_placed only writes new orders"
                )
            for model, rows in (
                (Order, orders),
                (OrderEvent, events),
                (Fill, _in_totals_order(fills)),
            ):
                table = cast(Table, model.__table__)
                self._write_many(session, ("insert", table.name), table.insert, rows)
            self._insert_ignore_many(session, LedgerEntry, _in_totals_order(ledger))
        return orders

    # ---- news and sentiment (the sentiment scorer) ----------------------------------------

    def record_news(
        self,
        message: NewsArticleMessage,
        *,
        scorer: str,
        score: float,
        tickers: Mapping[str, float],
    ) -> bool:
        """Keep an article (from its `news.raw` message) with its overall score and its score
        per ticker, in one transaction. False, and nothing written, when its article id is
        already recorded: an article is scored once."""
        article = message.payload
        scorer = canonical_name(scorer, "scorer")
        ts = article.published_at or article.fetched_at
        values = {
            "article_id": article.article_id,
            "message_id": message.message_id,
            "source": article.source,
            "external_id": article.external_id,
            "url": article.url,
            "title": article.title,
            "body": article.body,
            "published_at": article.published_at,
            "fetched_at": article.fetched_at,
            "scorer": scorer,
            "score": _score(score),
            "recorded_at": _utc(None),
        }
        rows = [
            {
                "article_id": article.article_id,
                "symbol": validate_symbol(symbol),
                "ts": ts,
                "score": _score(value),
                "scorer": scorer,
            }
            for symbol, value in tickers.items()
        ]
        with self.session() as session:
            if not self._insert_ignore(session, NewsArticleRecord, values):
                return False
            if rows:
                session.execute(insert(NewsScoreRecord), rows)
        return True

    def news_article(self, article_id: str) -> NewsArticleRecord | None:
        """The recorded article with this id (content hash), or None."""
        with self.session() as session:
            return session.get(NewsArticleRecord, article_id)

    def news_scores(
        self,
        *,
        symbols: Iterable[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[NewsScoreRecord]:
        """Scores per ticker in time order, for `symbols` (all when None) with start <= ts <
        end: what a backtest on recorded news reads."""
        stmt = select(NewsScoreRecord).order_by(
            NewsScoreRecord.ts, NewsScoreRecord.symbol, NewsScoreRecord.article_id
        )
        if symbols is not None:
            stmt = stmt.where(NewsScoreRecord.symbol.in_([validate_symbol(s) for s in symbols]))
        if start is not None:
            stmt = stmt.where(NewsScoreRecord.ts >= _utc(start))
        if end is not None:
            stmt = stmt.where(NewsScoreRecord.ts < _utc(end))
        with self.session() as session:
            return list(session.scalars(stmt))

    # ---- the agent and the learning loop ---------------------------------------------------

    def config_version(self) -> int:
        """A number that grows with every system config change (the latest history id; 0 when
        nothing ever changed): what a watcher compares to know it must re-read."""
        with self.reading() as session:
            return int(session.scalar(select(func.max(ConfigChange.id))) or 0)

    def config_values(self) -> dict[str, Any]:
        """Every live-tunable value now, by key."""
        with self.reading() as session:
            return {c.key: c.value for c in session.scalars(select(SystemConfig))}

    def propose_config(
        self, key: str, value: Any, *, proposed_by: str, reason: str, approval: bool
    ) -> ConfigProposal:
        """Propose a system config change; applied at once unless `approval` is needed, else
        kept pending until `decide_config`."""
        key = _config_key(key)
        value = _json(value, key)
        if value is None:
            raise ValidationError(f"config {key} cannot be set to null")
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationError("say why the config should change (reason)")
        who = _ident(proposed_by, "proposed_by")
        proposal = ConfigProposal(
            key=key,
            old_value=self.get_config(key),
            new_value=value,
            proposed_by=who,
            proposed_at=_utc(None),
            reason=reason,
            status="pending",
        )
        with self.session() as session:
            session.add(proposal)
            session.flush()
            proposal_id = proposal.id
        if approval:
            return self.config_proposal(proposal_id)
        return self.decide_config(proposal_id, approve=True, decided_by=who, reason=reason)

    def decide_config(
        self, proposal_id: int, *, approve: bool, decided_by: str, reason: str
    ) -> ConfigProposal:
        """Apply (through `set_config`, so the change is in the history) or reject a pending
        proposal; a proposal decided before raises `ValidationError`."""
        who = _ident(decided_by, "decided_by")
        with self.session() as session:
            found = session.get(ConfigProposal, proposal_id, with_for_update=True)
            if found is None:
                raise ValidationError(f"no config proposal {proposal_id}")
            if found.status != "pending":
                raise ValidationError(f"config proposal {proposal_id} is already {found.status}")
            found.status = "applied" if approve else "rejected"
            found.decided_by, found.decided_at = who, _utc(None)
            key, value = found.key, found.new_value
        if approve:
            self.set_config(key, value, changed_by=who, reason=f"proposal {proposal_id}: {reason}")
        return self.config_proposal(proposal_id)

    def config_proposal(self, proposal_id: int) -> ConfigProposal:
        with self.session() as session:
            found = session.get(ConfigProposal, proposal_id)
            if found is None:
                raise ValidationError(f"no config proposal {proposal_id}")
            return found

    def config_proposals(self, *, status: str | None = None) -> list[ConfigProposal]:
        """Config proposals, oldest first; only those in `status` when given."""
        stmt = select(ConfigProposal).order_by(ConfigProposal.id)
        if status is not None:
            stmt = stmt.where(
                ConfigProposal.status == _choice(status, CONFIG_PROPOSAL_STATES, "status")
            )
        with self.session() as session:
            return list(session.scalars(stmt))

    def record_weight_adjustment(
        self,
        *,
        method: str,
        before: dict[str, float],
        after: dict[str, float],
        evidence: dict[str, Any],
        applied: bool,
        at: datetime | None = None,
    ) -> WeightAdjustment:
        """Keep one learning-loop update of the ensemble weights (or one a guardrail held)."""
        row = WeightAdjustment(
            adjusted_at=_utc(at),
            method=_word(method, "method"),
            before=_json(before, "before"),
            after=_json(after, "after"),
            evidence=_json(evidence, "evidence"),
            applied=bool(applied),
        )
        with self.session() as session:
            session.add(row)
        return row

    def weight_adjustments(self, *, latest: int | None = None) -> list[WeightAdjustment]:
        """Weight adjustments oldest first; with `latest`, only the latest N."""
        stmt = select(WeightAdjustment).order_by(WeightAdjustment.id.desc())
        if latest is not None:
            stmt = stmt.limit(_horizon(latest))
        with self.session() as session:
            return list(session.scalars(stmt))[::-1]

    def save_profile_version(
        self,
        name: str,
        values: dict[str, Any],
        *,
        created_by: str,
        reason: str,
        effective_from: datetime | None = None,
    ) -> PolicyProfileVersion:
        """A new version of profile `name` (the next number): the live profile's values with
        `values` over them. Without `effective_from` it is a candidate (see `activate_profile`)."""
        known = {c.name for c in cast(Table, PolicyProfileVersion.__table__).columns}
        limits = known - {"name", "version", "effective_from", "created_by", "created_at", "reason"}
        unknown = set(values) - limits
        if unknown:
            raise ValidationError(
                f"unknown policy profile field(s) {', '.join(sorted(unknown))}; "
                f"choose from {', '.join(sorted(limits))}"
            )
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationError("say why the profile changes (reason)")
        live = self.profile(name)
        fields = {c: getattr(live, c) for c in limits}
        for column, value in values.items():
            if column == "agent_rules":
                fields[column] = _json(value, column)
            elif column == "description":
                fields[column] = str(value)
            elif column == "max_open_positions":
                fields[column] = int(_positive(value, column))
            elif column == "approval_notional":  # None: no intent waits for an operator
                fields[column] = _positive_or_none(value, column)
            else:
                fields[column] = _positive(value, column)
        with self.session() as session:
            latest = session.scalar(
                select(func.max(PolicyProfileVersion.version)).where(
                    PolicyProfileVersion.name == live.name
                )
            )
            row = PolicyProfileVersion(
                name=live.name,
                version=int(latest or 0) + 1,
                effective_from=None if effective_from is None else _utc(effective_from),
                created_by=_ident(created_by, "created_by"),
                created_at=_utc(None),
                reason=reason,
                **fields,
            )
            session.add(row)
        return row

    def activate_profile(
        self, name: str, version: int, *, activated_by: str, at: datetime | None = None
    ) -> PolicyProfileVersion:
        """Make a saved version the live values of its profile from `at` (now by default): the
        profile's row takes its limits and its `updated_at` (the version the pipeline reports)."""
        when = _utc(at)
        with self.session() as session:
            found = session.get(PolicyProfileVersion, (name, version), with_for_update=True)
            if found is None:
                raise ValidationError(f"no version {version} of policy profile {name!r}")
            live = session.get(PolicyProfile, name, with_for_update=True)
            if live is None:
                raise ValidationError(f"no policy profile named {name!r}")
            for column in cast(Table, PolicyProfile.__table__).columns:
                if column.name not in ("name", "updated_at"):
                    setattr(live, column.name, getattr(found, column.name))
            live.updated_at = when
            found.effective_from = when
        _ident(activated_by, "activated_by")
        return self.profile_versions(name, version=version)[0]

    def profile_versions(
        self, name: str, *, version: int | None = None
    ) -> list[PolicyProfileVersion]:
        """The saved versions of a profile, oldest first (or the one `version`)."""
        stmt = (
            select(PolicyProfileVersion)
            .where(PolicyProfileVersion.name == name)
            .order_by(PolicyProfileVersion.version)
        )
        if version is not None:
            stmt = stmt.where(PolicyProfileVersion.version == version)
        with self.session() as session:
            return list(session.scalars(stmt))

    def intents_between(self, start: datetime, end: datetime) -> list[IntentRecord]:
        """Kept intents produced in [start, end), oldest first (a profile replay's input)."""
        stmt = (
            select(IntentRecord)
            .where(IntentRecord.produced_at >= _utc(start), IntentRecord.produced_at < _utc(end))
            .order_by(IntentRecord.produced_at, IntentRecord.message_id)
        )
        with self.reading() as session:
            return list(session.scalars(stmt))

    def risk_events_since(self, since: datetime) -> list[RiskEventRecord]:
        """Kept risk events produced at or after `since`, oldest first (the agent's windows)."""
        return self._kept_since(RiskEventRecord, since)

    def audit_since(
        self, since: datetime, *, actions: Iterable[str] | None = None
    ) -> list[AuditRecord]:
        """Kept audit entries produced at or after `since` (only `actions` when given), oldest
        first (the agent's windows)."""
        where = None if actions is None else AuditRecord.action.in_(list(actions))
        return self._kept_since(AuditRecord, since, where)

    def _kept_since(self, model: type[_KeptT], since: datetime, where: Any = None) -> list[_KeptT]:
        table = cast(Table, model.__table__)
        stmt = (
            select(model)
            .where(table.c.produced_at >= _utc(since))
            .order_by(table.c.produced_at, table.c.message_id)
        )
        if where is not None:
            stmt = stmt.where(where)
        with self.reading() as session:
            return list(session.scalars(stmt))


@dataclass(frozen=True)
class PlacedOrder:
    """A new order and what placed it, for `RecordsStore.record_placed`: the keyword arguments
    of `record_order`, of each `apply_order_update` (`event_id` included, the client order id
    left out) and of each `record_fill`, in the order they happened."""

    order: Mapping[str, Any]
    updates: Sequence[Mapping[str, Any]] = ()
    fills: Sequence[Mapping[str, Any]] = ()


# ---- rows: what the one-at-a-time and the batch writes insert ---------------------------------


def _order_row(
    *,
    client_order_id: str,
    symbol: str,
    side: str,
    quantity: float,
    order_type: str = "market",
    limit_price: float | None = None,
    stop_price: float | None = None,
    time_in_force: str = "day",
    strategy: str | None = None,
    broker: str | None = None,
    status: str = "new",
    intent_id: str | None = None,
    correlation_id: str | None = None,
    broker_order_id: str | None = None,
    at: datetime | None = None,
    external: bool = False,
) -> dict[str, Any]:
    """A new order's row, every value checked (see `RecordsStore.record_order`)."""
    when = _utc(at)
    values = {
        "client_order_id": client_order_id_of(client_order_id),
        "broker_order_id": _ident(broker_order_id, "broker_order_id", optional=True),
        "intent_id": _ident(intent_id, "intent_id", optional=True),
        "correlation_id": _ident(correlation_id, "correlation_id", optional=True),
        "strategy": None if strategy is None else canonical_name(strategy, "strategy"),
        "broker": None if broker is None else _word(broker, "broker"),
        "symbol": validate_symbol(symbol),
        "side": _choice(side, ORDER_SIDES, "side"),
        "order_type": _word(order_type, "order_type"),
        "quantity": _positive(quantity, "quantity"),
        "limit_price": _positive_or_none(limit_price, "limit_price"),
        "stop_price": _positive_or_none(stop_price, "stop_price"),
        "time_in_force": _choice(time_in_force, TIMES_IN_FORCE, "time_in_force"),
        "status": _choice(status, _NEW_ORDER_STATUSES, "status of a new order"),
        "filled_quantity": 0.0,
        "created_at": when,
        "updated_at": when,
        "external": bool(external),
    }
    return values


def _order_update(
    *,
    status: str,
    broker_at: datetime,
    filled_quantity: float | None = None,
    avg_price: float | None = None,
    broker_order_id: str | None = None,
    reason: str | None = None,
    sequence: int | None = None,
) -> OrderUpdate:
    """A broker update, every value checked (see `RecordsStore.apply_order_update`)."""
    try:
        return OrderUpdate(
            status=OrderStatus(status),
            broker_at=_utc(broker_at),
            filled_quantity=_finite_or_none(filled_quantity, "filled_quantity"),
            avg_price=_positive_or_none(avg_price, "avg_price"),
            broker_order_id=_ident(broker_order_id, "broker_order_id", optional=True),
            reason=_text_or_none(reason, "reason"),
            sequence=_sequence(sequence),
        )
    except ValueError as e:
        if isinstance(e, ValidationError):
            raise
        raise ValidationError(f"unknown order status {status!r}") from None


def _fill_row(
    *,
    execution_id: str,
    client_order_id: str,
    symbol: str,
    side: str,
    quantity: float,
    price: float,
    filled_at: datetime,
    fee: float = 0.0,
    broker: str = "paper",
    external: bool = False,
) -> dict[str, Any]:
    """A fill's row, every value checked (see `RecordsStore.record_fill`)."""
    return {
        "execution_id": _ident(execution_id, "execution_id"),
        "client_order_id": client_order_id_of(client_order_id),
        "broker": _word(broker, "broker"),
        "symbol": validate_symbol(symbol),
        "side": _choice(side, ORDER_SIDES, "side"),
        "quantity": _positive(quantity, "quantity"),
        "price": _positive(price, "price"),
        "fee": _finite(fee, "fee"),
        "filled_at": _utc(filled_at),
        "external": bool(external),
    }


def _trade_row(
    *,
    execution_id: str,
    client_order_id: str,
    correlation_id: str,
    symbol: str,
    side: str,
    quantity: float,
    price: float,
    executed_at: datetime,
    market_data_message_id: str | None = None,
    raw_signal_id: str | None = None,
    modified_signal_id: str | None = None,
    intent_id: str | None = None,
    strategy: str | None = None,
) -> dict[str, Any]:
    """A trade's row with its attribution chain, every value checked (`record_trade`)."""
    return {
        "execution_id": _ident(execution_id, "execution_id"),
        "client_order_id": client_order_id_of(client_order_id),
        "correlation_id": _ident(correlation_id, "correlation_id"),
        "market_data_message_id": _ident(
            market_data_message_id, "market_data_message_id", optional=True
        ),
        "raw_signal_id": _ident(raw_signal_id, "raw_signal_id", optional=True),
        "modified_signal_id": _ident(modified_signal_id, "modified_signal_id", optional=True),
        "intent_id": _ident(intent_id, "intent_id", optional=True),
        "strategy": None if strategy is None else canonical_name(strategy, "strategy"),
        "symbol": validate_symbol(symbol),
        "side": _choice(side, ORDER_SIDES, "side"),
        "quantity": _positive(quantity, "quantity"),
        "price": _positive(price, "price"),
        "executed_at": _utc(executed_at),
    }


def _kept_row(message: KeptMessage) -> tuple[type[Base], dict[str, Any]]:
    """The table a pipeline message is kept in and its row."""
    p = message.payload
    columns: dict[str, Any]
    if isinstance(message, RawSignalMessage | ModifiedSignalMessage):
        stage = "raw" if isinstance(message, RawSignalMessage) else "modified"
        model: type[Base] = SignalRecord
        columns = {
            "stage": stage,
            "strategy": message.payload.strategy,
            "symbol": message.payload.symbol,
            "direction": message.payload.direction.value,
            "ts": message.payload.ts,
        }
    elif isinstance(message, IntentMessage):
        model, columns = (
            IntentRecord,
            {
                "strategy": message.payload.strategy,
                "symbol": message.payload.symbol,
                "side": message.payload.side.value,
                "quantity": message.payload.quantity,
                "signal_id": message.payload.signal_id,
            },
        )
    elif isinstance(message, RiskEventMessage):
        model, columns = (
            RiskEventRecord,
            {
                "kind": message.payload.kind.value,
                "severity": message.payload.severity.value,
                "scope": message.payload.scope,
                "ts": message.payload.ts,
            },
        )
    elif isinstance(message, AuditMessage):
        model, columns = (
            AuditRecord,
            {
                "actor": message.payload.actor,
                "action": message.payload.action,
                "target": message.payload.target,
            },
        )
    else:
        raise ValidationError(
            f"the records keep signals, intents, risk events and audit, not {message!r:.80}"
        )
    return model, {
        "message_id": message.message_id,
        "version": message.version,
        "correlation_id": message.correlation_id,
        "causation_id": message.causation_id,
        "producer": message.producer,
        "produced_at": message.produced_at,
        "payload": JSONText(p.model_dump_json()),
        **columns,
    }


def _fill_cost_row(
    *,
    execution_id: str,
    client_order_id: str,
    broker: str,
    symbol: str,
    side: str,
    quantity: float,
    price: float,
    fee: float,
    filled_at: datetime,
    correlation_id: str | None = None,
    signal_id: str | None = None,
    strategy: str | None = None,
    arrival_price: float | None = None,
    arrival_at: datetime | None = None,
    slippage_bps: float | None = None,
    shadow_quantity: float | None = None,
    shadow_price: float | None = None,
    shadow_fee: float | None = None,
    shadow_price_diff_bps: float | None = None,
    recorded_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "execution_id": _ident(execution_id, "execution_id"),
        "client_order_id": client_order_id_of(client_order_id),
        "correlation_id": _ident(correlation_id, "correlation_id", optional=True),
        "signal_id": _ident(signal_id, "signal_id", optional=True),
        "strategy": None if strategy is None else canonical_name(strategy, "strategy"),
        "broker": _word(broker, "broker"),
        "symbol": validate_symbol(symbol),
        "side": _choice(side, ORDER_SIDES, "side"),
        "quantity": _positive(quantity, "quantity"),
        "price": _positive(price, "price"),
        "fee": _finite(fee, "fee"),
        "filled_at": _utc(filled_at),
        "arrival_price": _positive_or_none(arrival_price, "arrival_price"),
        "arrival_at": None if arrival_at is None else _utc(arrival_at),
        "slippage_bps": _finite_or_none(slippage_bps, "slippage_bps"),
        "shadow_quantity": _finite_or_none(shadow_quantity, "shadow_quantity"),
        "shadow_price": _positive_or_none(shadow_price, "shadow_price"),
        "shadow_fee": _finite_or_none(shadow_fee, "shadow_fee"),
        "shadow_price_diff_bps": _finite_or_none(shadow_price_diff_bps, "shadow_price_diff_bps"),
        "recorded_at": _utc(recorded_at),
    }


def _order_cost_row(
    *,
    client_order_id: str,
    strategy: str | None,
    broker: str,
    symbol: str,
    side: str,
    quantity: float,
    filled_quantity: float,
    arrival_price: float,
    avg_price: float | None,
    last_price: float,
    fees: float,
    execution_cost: float,
    opportunity_cost: float,
    shortfall: float,
    shortfall_bps: float,
    updated_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "client_order_id": client_order_id_of(client_order_id),
        "strategy": None if strategy is None else canonical_name(strategy, "strategy"),
        "broker": _word(broker, "broker"),
        "symbol": validate_symbol(symbol),
        "side": _choice(side, ORDER_SIDES, "side"),
        "quantity": _positive(quantity, "quantity"),
        "filled_quantity": _finite(filled_quantity, "filled_quantity"),
        "arrival_price": _positive(arrival_price, "arrival_price"),
        "avg_price": _positive_or_none(avg_price, "avg_price"),
        "last_price": _positive(last_price, "last_price"),
        "fees": _finite(fees, "fees"),
        "execution_cost": _finite(execution_cost, "execution_cost"),
        "opportunity_cost": _finite(opportunity_cost, "opportunity_cost"),
        "shortfall": _finite(shortfall, "shortfall"),
        "shortfall_bps": _finite(shortfall_bps, "shortfall_bps"),
        "updated_at": _utc(updated_at),
    }


def _signal_horizon_rows(
    *,
    signal_id: str,
    horizons: Iterable[int],
    strategy: str,
    symbol: str,
    timeframe: str,
    signal_at: datetime,
    strength: float,
    side: str,
    quantity: float,
    avg_price: float,
    fees: float,
    arrival_price: float,
    opened_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """A filled signal's open row at each horizon (bars)."""
    now = _utc(opened_at)
    common = {
        "signal_id": _ident(signal_id, "signal_id"),
        "strategy": canonical_name(strategy, "strategy"),
        "symbol": validate_symbol(symbol),
        "timeframe": _ident(timeframe, "timeframe", limit=8),
        "signal_at": _utc(signal_at),
        "strength": _finite(strength, "strength"),
        "side": _choice(side, ORDER_SIDES, "side"),
        "quantity": _positive(quantity, "quantity"),
        "avg_price": _positive(avg_price, "avg_price"),
        "fees": _finite(fees, "fees"),
        "arrival_price": _positive(arrival_price, "arrival_price"),
        "status": "open",
        "opened_at": now,
    }
    rows = [{**common, "horizon_bars": _horizon(h)} for h in horizons]
    if not rows:
        raise ValidationError("open a signal at one horizon at least")
    return rows


def _signal_outcome_row(
    *,
    signal_id: str,
    signal_at: datetime,
    symbol: str,
    outcome: str,
    slippage_bps: float | None = None,
    pnl: float | None = None,
    holding_seconds: float | None = None,
    execution_id: str | None = None,
    closed_at: datetime | None = None,
    recorded_at: datetime | None = None,
) -> dict[str, Any]:
    values = {
        "signal_id": _ident(signal_id, "signal_id"),
        "signal_at": _utc(signal_at),
        "symbol": validate_symbol(symbol),
        "outcome": _choice(outcome, SIGNAL_OUTCOMES, "outcome"),
        "slippage_bps": _finite_or_none(slippage_bps, "slippage_bps"),
        "pnl": _finite_or_none(pnl, "pnl"),
        "holding_seconds": _finite_or_none(holding_seconds, "holding_seconds"),
        "execution_id": _ident(execution_id, "execution_id", optional=True),
        "closed_at": None if closed_at is None else _utc(closed_at),
        "recorded_at": _utc(recorded_at),
    }
    if values["holding_seconds"] is not None and values["holding_seconds"] < 0:
        raise ValidationError("holding_seconds cannot be negative")
    return values


def _ledger_row(fill: Mapping[str, Any], strategy: str | None) -> dict[str, Any]:
    """The position-ledger entry of a fill's row, for its order's strategy."""
    signed = fill["quantity"] if fill["side"] == "buy" else -fill["quantity"]
    return {
        "execution_id": fill["execution_id"],
        "client_order_id": fill["client_order_id"],
        "strategy": strategy,
        "symbol": fill["symbol"],
        "side": fill["side"],
        "quantity": fill["quantity"],
        "signed_quantity": signed,
        "price": fill["price"],
        "fee": fill["fee"],
        "executed_at": fill["filled_at"],
    }


def _in_totals_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill or ledger rows sorted by the key of the totals row each one updates (a trigger locks
    it until the transaction ends). Every writer takes those locks in this order, after the
    fills' before the ledger's, so two writers of the same symbols never wait on each other in a
    cycle (PostgreSQL would abort one of them as a deadlock)."""
    return sorted(rows, key=lambda r: (r.get("broker") or "", r.get("strategy") or "", r["symbol"]))


def _score(value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and -1 <= value <= 1):
        raise ValidationError(f"a sentiment score is a number in [-1, 1], got {value!r}")
    return float(value)


# ---- validation helpers -------------------------------------------------------------------


def client_order_id_of(value: str) -> str:
    """A client order id checked by the contracts' rule (the broker's limit of 48 characters)."""
    if not isinstance(value, str) or not _CLIENT_ORDER_ID.fullmatch(value):
        raise ValidationError(
            f"client_order_id must be 1 to {CLIENT_ORDER_ID_MAX_LENGTH} of A-Z, a-z, 0-9, "
            f"'._:/-', a letter or digit first; got {value!r:.80}"
        )
    return value


def _order_state(order: Order) -> OrderState:
    return OrderState(
        quantity=order.quantity,
        status=OrderStatus(order.status),
        filled_quantity=order.filled_quantity,
        avg_price=order.avg_price,
        broker_order_id=order.broker_order_id,
        reason=order.reason,
        broker_at=order.broker_updated_at,
        broker_sequence=order.broker_sequence,
    )


def _missing_schema(e: StatementError) -> bool:
    if isinstance(e, ProgrammingError):  # PostgreSQL
        return isinstance(e.orig, pg_errors.UndefinedTable | pg_errors.UndefinedColumn)
    return isinstance(e, OperationalError) and "no such" in str(e.orig)  # SQLite


def _reason(e: StatementError) -> str:
    return str(e.orig if isinstance(e, DBAPIError) else e).strip().splitlines()[0]


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if value.__class__ is datetime and value.tzinfo is UTC:  # the common case, checked first
        return value
    if not isinstance(value, datetime):
        raise ValidationError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"timestamp {value.isoformat()} has no time zone; pass UTC")
    return value.astimezone(UTC)


def _ident(value: str | None, name: str, *, optional: bool = False, limit: int = 64) -> Any:
    if value.__class__ is str and 0 < len(value) <= limit and _IDENTIFIER.fullmatch(value):
        return value  # the common case, checked first
    if value is None and optional:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise ValidationError(f"{name} must be a non-empty string of at most {limit} characters")
    if not _IDENTIFIER.fullmatch(value):
        raise ValidationError(f"{name} must be printable ASCII without spaces")
    return value


def _word(value: str, name: str) -> str:
    if not isinstance(value, str) or not _WORD.fullmatch(value):
        raise ValidationError(f"{name} must be a lower-case word, got {value!r}")
    return value


def _choice(value: str, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise ValidationError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _finite(value: float, name: str) -> float:
    if value.__class__ is float and math.isfinite(value):  # the common case, checked first
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _finite_or_none(value: float | None, name: str) -> float | None:
    return None if value is None else _finite(value, name)


def _positive_or_none(value: float | None, name: str) -> float | None:
    return None if value is None else _positive(value, name)


def _text_or_none(value: str | None, name: str, limit: int = 256) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise ValidationError(f"{name} must be text of 1 to {limit} characters")
    return value


def _sequence(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValidationError(f"sequence must be an integer in [0, 2**63), got {value!r}")
    return value


def _horizon(value: int) -> int:
    if value.__class__ is int and 0 < value < 2**31:  # the common case, checked first
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
        raise ValidationError(f"expected a positive whole number of bars, got {value!r}")
    return value


def _positive(value: float, name: str) -> float:
    number = _finite(value, name)
    if number <= 0:
        raise ValidationError(f"{name} must be positive, got {value!r}")
    return number


def _json(value: Any, name: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValidationError(
            f"{name} is not JSON (finite numbers, strings, lists, dicts): {e}"
        ) from None


def _config_key(key: str) -> str:
    if not isinstance(key, str) or not _CONFIG_KEY.fullmatch(key):
        raise ValidationError(
            f"config key {key!r} must be lower-case letters, digits, '_' or '.' (at most 64)"
        )
    return key
