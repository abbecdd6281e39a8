"""`PostgresBarStore`: the `BarStore` protocol on PostgreSQL, with TimescaleDB when present.

Tables: `market_data_bars` and `symbol_metadata`, the bar history and per-symbol metadata layout
of the market-data design. Three deliberate departures from it:
- no surrogate UUID `id`: the natural key (symbol, timeframe, timestamp) is the primary key, which
  partitioned tables and hypertables both require to include the time column anyway;
- prices and volumes are DOUBLE PRECISION, not NUMERIC(12,4)/BIGINT: crypto prices need more than
  four decimals and crypto volumes are fractional, and the bar frame is float64 end to end;
- timeframes use the workbench spelling ('1m', '5m', '1h', '1d'), as in the lake and the cache.

Layout: with TimescaleDB, a hypertable (7-day chunks) with compression after 30 days and
continuous aggregates 1m -> 5m -> 1h -> 1d; without it, monthly range partitions created on
demand and materialized views refreshed by `refresh_rollups()`. Either way `read_bars` of 5m, 1h
or 1d returns stored bars plus rolled-up bars for the buckets nobody stored, so a caller that
swaps the lake for this store sees the same coarse bars.

Writes: bars are validated, then sent with a binary COPY built with numpy. When no stored bar lies
inside the batch's span for any (symbol, timeframe), the COPY goes straight into the table (the
speed of a raw COPY); otherwise, or when a concurrent writer got there first, the batch is copied
into a temporary staging table and merged with UPDATE + `INSERT ... SELECT ... ON CONFLICT`, so a
rewrite never duplicates a bar and a corrected bar replaces the stored one. `ON CONFLICT` makes
every row a speculative insertion: staging + ON CONFLICT alone measured at about a third of the
rate of a raw COPY (benchmarks/bench_pg_bars.py), hence the conflict-free fast path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
import psycopg
from psycopg import errors as pg_errors
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from tradeos_lab.bars import BAR_COLUMNS, bar_span, bar_strings, empty_bars, validate_bars
from tradeos_lab.errors import (
    ConfigError,
    DependencyUnavailable,
    StoreError,
    ValidationError,
)
from tradeos_lab.stores.records.timescale import enable_timescaledb
from tradeos_lab.symbols import Timeframe, validate_symbol, validate_symbols

log = logging.getLogger(__name__)

Mode = Literal["timescale", "native"]

TABLE: Final = "market_data_bars"
METADATA: Final = "symbol_metadata"
READ_VIEW: Final = "market_data_bars_all"  # stored bars plus rollups for unstored buckets
STAGE: Final = "market_data_bars_stage"
# Rollup views: timeframe -> (view, source relation, source time column, source filter, bucket).
ROLLUPS: Final[dict[Timeframe, tuple[str, str, str, str, str]]] = {
    Timeframe.M5: ("bars_5m", TABLE, '"timestamp"', "WHERE timeframe = '1m'", "5 minutes"),
    Timeframe.H1: ("bars_1h", "bars_5m", "bucket", "", "1 hour"),
    Timeframe.D1: ("bars_1d", "bars_1h", "bucket", "", "1 day"),
}
# Continuous aggregate policies: (start_offset, end_offset, schedule_interval), two buckets+.
_CAGG_POLICIES: Final = {
    "bars_5m": ("1 day", "5 minutes", "5 minutes"),
    "bars_1h": ("3 days", "1 hour", "30 minutes"),
    "bars_1d": ("7 days", "1 day", "1 hour"),
}
_COLUMNS: Final = (
    "symbol",
    "timeframe",
    '"timestamp"',
    "open",
    "high",
    "low",
    "close",
    "volume",
    "vwap",
    "trade_count",
)
_COLUMN_LIST: Final = ", ".join(_COLUMNS)
_VALUES: Final = ("open", "high", "low", "close", "volume", "vwap", "trade_count")
_SCHEMA_LOCK: Final = 0x6261_7273  # advisory lock key: one schema creator at a time
_MAX_LIMIT: Final = 10_000_000
_INT4_MAX: Final = 2**31 - 1
_PG_EPOCH_US: Final = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
_COPY_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER: Final = b"\xff\xff"


# ---- schema --------------------------------------------------------------------------------

_BARS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    symbol varchar(20) NOT NULL,
    timeframe varchar(10) NOT NULL,
    "timestamp" timestamptz NOT NULL,
    open double precision NOT NULL,
    high double precision NOT NULL,
    low double precision NOT NULL,
    close double precision NOT NULL,
    volume double precision NOT NULL,
    vwap double precision,
    trade_count integer,
    CONSTRAINT {TABLE}_pkey PRIMARY KEY (symbol, timeframe, "timestamp")
)"""

_METADATA_TABLE = f"""
CREATE TABLE IF NOT EXISTS {METADATA} (
    symbol varchar(20) PRIMARY KEY,
    name varchar(255),
    earliest_data_date timestamptz,
    latest_data_date timestamptz,
    total_bars_stored bigint NOT NULL DEFAULT 0,
    last_fetched_at timestamptz
)"""

# Monthly partitions, created by the writer for the months a batch touches. Bounds are spelled
# in UTC, whatever the session's TimeZone and DateStyle; a concurrent creation is not an error.
_PARTITION_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {TABLE}_add_partitions(months timestamptz[]) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    m timestamptz;
    lo timestamp;
    part text;
    created integer := 0;
BEGIN
    FOREACH m IN ARRAY months LOOP
        lo := date_trunc('month', m AT TIME ZONE 'UTC');
        part := '{TABLE}_' || to_char(lo, 'YYYY_MM');
        IF to_regclass(quote_ident(part)) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE IF NOT EXISTS %I PARTITION OF {TABLE} '
                    || 'FOR VALUES FROM (%L) TO (%L)',
                    part,
                    to_char(lo, 'YYYY-MM-DD') || ' 00:00:00+00',
                    to_char(lo + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00');
                created := created + 1;
            EXCEPTION WHEN duplicate_table OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
    RETURN created;
END
$fn$"""

_ROLLUP_SELECT = """
SELECT symbol,
       {bucket} AS bucket,
       {first_open} AS open,
       max(high) AS high,
       min(low) AS low,
       {last_close} AS close,
       sum(volume) AS volume,
       CASE WHEN count(vwap) = count(*) AND sum(volume) > 0
            THEN sum(vwap * volume) / sum(volume) END AS vwap,
       CASE WHEN count(trade_count) = count(*) THEN sum(trade_count)::bigint END AS trade_count
FROM {source}
{where}
GROUP BY symbol, {bucket}"""


def _rollup_select(timeframe: Timeframe, mode: Mode) -> str:
    _view, source, time_col, where, interval = ROLLUPS[timeframe]
    if mode == "timescale":
        bucket = f"time_bucket(INTERVAL '{interval}', {time_col})"
        first_open, last_close = f"first(open, {time_col})", f"last(close, {time_col})"
    else:
        bucket = (
            f"date_bin(INTERVAL '{interval}', {time_col}, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
        )
        first_open = f"(array_agg(open ORDER BY {time_col}))[1]"
        last_close = f"(array_agg(close ORDER BY {time_col} DESC))[1]"
    return _ROLLUP_SELECT.format(
        bucket=bucket, first_open=first_open, last_close=last_close, source=source, where=where
    )


def _read_view() -> str:
    parts = [f"SELECT {_COLUMN_LIST} FROM {TABLE}"]
    for tf, (view, *_rest) in ROLLUPS.items():
        parts.append(
            f"SELECT r.symbol, '{tf.value}'::varchar(10), r.bucket, r.open, r.high, r.low, "
            f"r.close, r.volume, r.vwap, r.trade_count FROM {view} r "
            f"WHERE NOT EXISTS (SELECT 1 FROM {TABLE} b WHERE b.symbol = r.symbol "
            f"AND b.timeframe = '{tf.value}' AND b.\"timestamp\" = r.bucket)"
        )
    return f"CREATE OR REPLACE VIEW {READ_VIEW} AS\n" + "\nUNION ALL\n".join(parts)


def schema_sql(mode: Mode) -> list[str]:
    """The idempotent DDL of one layout, in order (run each statement outside a transaction)."""
    statements = [_BARS_TABLE, _METADATA_TABLE]
    if mode == "native":
        statements[0] += ' PARTITION BY RANGE ("timestamp")'
        statements.append(_PARTITION_FUNCTION)
        for tf, (view, *_rest) in ROLLUPS.items():
            # WITH DATA: an empty view is populated at once, so reads never hit an unpopulated one.
            statements.append(
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS {view} AS{_rollup_select(tf, mode)}\n"
                "WITH DATA"
            )
            # The unique index is what REFRESH ... CONCURRENTLY needs.
            statements.append(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {view}_key ON {view} (symbol, bucket)"
            )
    else:
        statements += [
            f"SELECT create_hypertable('{TABLE}', 'timestamp', "
            "chunk_time_interval => INTERVAL '7 days', if_not_exists => TRUE)",
            # ALTER ... SET (timescaledb.compress) is guarded by ensure_schema: it fails once
            # chunks are compressed, so it only runs while compression is still off.
            f"ALTER TABLE {TABLE} SET (timescaledb.compress, "
            "timescaledb.compress_segmentby = 'symbol, timeframe', "
            "timescaledb.compress_orderby = '\"timestamp\" DESC')",
            f"SELECT add_compression_policy('{TABLE}', compress_after => INTERVAL '30 days', "
            "if_not_exists => TRUE)",
        ]
        for tf, (view, *_rest) in ROLLUPS.items():
            statements.append(
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS {view} "
                "WITH (timescaledb.continuous, timescaledb.materialized_only = false) "
                f"AS{_rollup_select(tf, mode)}\nWITH NO DATA"
            )
            start, end, every = _CAGG_POLICIES[view]
            statements.append(
                f"SELECT add_continuous_aggregate_policy('{view}', "
                f"start_offset => INTERVAL '{start}', end_offset => INTERVAL '{end}', "
                f"schedule_interval => INTERVAL '{every}', if_not_exists => TRUE)"
            )
    statements.append(_read_view())
    return statements


# ---- the store -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Batch:
    """A validated frame sorted by (symbol, timeframe, ts), with its per-key and symbol spans."""

    frame: pd.DataFrame
    keys: pd.DataFrame  # symbol, timeframe, lo, hi
    symbols: pd.DataFrame  # symbol, earliest, latest, rows


class PostgresBarStore:
    """Bars on PostgreSQL (`market_data_bars`, `symbol_metadata`); see the module docstring for
    the layout."""

    def __init__(self, engine: Engine, *, create_schema: bool = True) -> None:
        if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
            raise ConfigError("PostgresBarStore needs a postgresql+psycopg:// engine")
        self.engine = engine
        self._mode: Mode | None = None
        if create_schema:
            self.ensure_schema()

    @property
    def mode(self) -> Mode:
        """'timescale' (hypertable, continuous aggregates) or 'native' (partitions, views)."""
        if self._mode is None:
            with self._connection() as pg:
                found = self._existing_mode(pg)
            if found is None:
                raise StoreError(f"{TABLE} does not exist; call ensure_schema()")
            self._mode = found
        return self._mode

    def ensure_schema(self) -> Mode:
        """Create whatever is missing; TimescaleDB is used when the server offers it.

        An existing table keeps its layout: a partitioned table is not converted when
        TimescaleDB appears later.
        """
        with self._translate():
            with self.engine.begin() as conn:
                existing = self._existing_mode(_driver(conn))
                if existing is None:
                    existing = "timescale" if enable_timescaledb(conn) else "native"
            mode: Mode = existing
            with self._autocommit() as pg:
                pg.execute("SELECT pg_advisory_lock(%s)", [_SCHEMA_LOCK])
                try:
                    compressed = mode == "timescale" and self._compression_enabled(pg)
                    for statement in schema_sql(mode):
                        if compressed and "timescaledb.compress," in statement:
                            continue
                        pg.execute(statement)  # no parameters: '%' in the SQL stays as is
                finally:
                    pg.execute("SELECT pg_advisory_unlock(%s)", [_SCHEMA_LOCK])
        self._mode = mode
        return mode

    # ---- writing ---------------------------------------------------------------------------

    def write_bars(self, bars: pd.DataFrame) -> int:
        """Validate and store bars idempotently; returns the number of rows given.

        Nothing is written when any row is invalid. A bar already stored with other values is
        replaced (a provider's revised last bar); one stored with the same values is left alone.
        """
        batch = _prepare(bars)
        if batch.frame.empty:
            return 0
        mode = self.mode
        with self._connection() as pg:
            if mode == "native":
                months = np.unique(
                    batch.frame["ts"].to_numpy(dtype="datetime64[ns]").astype("datetime64[M]")
                )
                pg.execute(
                    f"SELECT {TABLE}_add_partitions(%s::timestamptz[])",
                    [[pd.Timestamp(m, tz="UTC").to_pydatetime() for m in months]],
                )
            inserted = None
            if not self._overlaps(pg, batch.keys):
                inserted = self._copy_direct(pg, batch)
            if inserted is None:
                inserted = self._merge(pg, batch)
            self._update_metadata(pg, batch.symbols, inserted)
        return len(batch.frame)

    def _overlaps(self, pg: psycopg.Connection[Any], keys: pd.DataFrame) -> bool:
        """Whether any stored bar lies within the batch's span of one of its keys."""
        row = pg.execute(
            f"""SELECT EXISTS (
                SELECT 1 FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[])
                     AS k(symbol, timeframe, lo, hi)
                WHERE EXISTS (SELECT 1 FROM {TABLE} b WHERE b.symbol = k.symbol
                              AND b.timeframe = k.timeframe
                              AND b."timestamp" BETWEEN k.lo AND k.hi))""",
            [
                keys["symbol"].tolist(),
                keys["timeframe"].tolist(),
                _datetimes(keys["lo"]),
                _datetimes(keys["hi"]),
            ],
        ).fetchone()
        return bool(row and row[0])

    def _copy_direct(self, pg: psycopg.Connection[Any], batch: _Batch) -> dict[str, int] | None:
        """COPY into the table; None when a concurrent writer stored one of the bars first."""
        try:
            with pg.transaction():  # a savepoint inside the caller's transaction
                _copy(pg, TABLE, batch)
        except pg_errors.UniqueViolation:
            log.info("bars: a concurrent write overlapped this batch; merging instead")
            return None
        return dict(zip(batch.symbols["symbol"], batch.symbols["rows"].astype(int), strict=True))

    def _merge(self, pg: psycopg.Connection[Any], batch: _Batch) -> dict[str, int]:
        """Staging COPY, then update changed bars and insert new ones; returns rows added."""
        pg.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} "
            f"(LIKE {TABLE} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        _copy(pg, STAGE, batch)
        pg.execute(f"ANALYZE {STAGE}")  # so the join below plans for the real row count
        keys = batch.keys
        changed = ", ".join(f"{c} = s.{c}" for c in _VALUES)
        pg.execute(
            f"""UPDATE {TABLE} b SET {changed}
                FROM {STAGE} s
                WHERE b.symbol = s.symbol AND b.timeframe = s.timeframe
                  AND b."timestamp" = s."timestamp"
                  AND b."timestamp" BETWEEN %s AND %s
                  AND (b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trade_count)
                      IS DISTINCT FROM
                      (s.open, s.high, s.low, s.close, s.volume, s.vwap, s.trade_count)""",
            [keys["lo"].min().to_pydatetime(), keys["hi"].max().to_pydatetime()],
        )
        rows = pg.execute(
            f"""WITH added AS (
                    INSERT INTO {TABLE} ({_COLUMN_LIST})
                    SELECT {_COLUMN_LIST} FROM {STAGE}
                    ON CONFLICT (symbol, timeframe, "timestamp") DO NOTHING
                    RETURNING symbol)
                SELECT symbol, count(*) FROM added GROUP BY symbol"""
        ).fetchall()
        return {str(symbol): int(n) for symbol, n in rows}

    def _update_metadata(
        self, pg: psycopg.Connection[Any], symbols: pd.DataFrame, inserted: dict[str, int]
    ) -> None:
        pg.execute(
            f"""INSERT INTO {METADATA} AS m
                    (symbol, earliest_data_date, latest_data_date, total_bars_stored,
                     last_fetched_at)
                SELECT k.symbol, k.earliest, k.latest, k.added, now()
                FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::bigint[])
                     AS k(symbol, earliest, latest, added)
                ON CONFLICT (symbol) DO UPDATE SET
                    earliest_data_date = LEAST(m.earliest_data_date, EXCLUDED.earliest_data_date),
                    latest_data_date = GREATEST(m.latest_data_date, EXCLUDED.latest_data_date),
                    total_bars_stored = m.total_bars_stored + EXCLUDED.total_bars_stored,
                    last_fetched_at = EXCLUDED.last_fetched_at""",
            [
                symbols["symbol"].tolist(),
                _datetimes(symbols["earliest"]),
                _datetimes(symbols["latest"]),
                [inserted.get(s, 0) for s in symbols["symbol"]],
            ],
        )

    # ---- rollups ---------------------------------------------------------------------------

    def refresh_rollups(self, *, concurrently: bool = True) -> None:
        """Bring the 5m, 1h and 1d rollups up to date with the stored 1m bars, finest first.

        Native views are recomputed in full (CONCURRENTLY keeps them readable meanwhile); on
        TimescaleDB the continuous aggregates are refreshed over their whole range, which their
        policies otherwise do incrementally in the background.
        """
        mode = self.mode
        with self._translate(), self._autocommit() as pg:
            for view, *_rest in ROLLUPS.values():
                if mode == "timescale":
                    pg.execute(
                        "CALL refresh_continuous_aggregate(%s::regclass, NULL, NULL)", [view]
                    )
                    continue
                populated = pg.execute(
                    "SELECT ispopulated FROM pg_matviews WHERE matviewname = %s", [view]
                ).fetchone()
                how = "CONCURRENTLY " if concurrently and populated and populated[0] else ""
                pg.execute(f"REFRESH MATERIALIZED VIEW {how}{view}")

    # ---- reading ---------------------------------------------------------------------------

    def read_bars(
        self,
        symbol: str,
        timeframe: Timeframe | str,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Bars in [start, end), oldest first; with `limit`, the latest `limit` of them.

        5m, 1h and 1d include rolled-up bars for buckets with no stored bar (as of the last
        refresh on plain PostgreSQL; live on TimescaleDB).
        """
        validate_symbol(symbol)
        tf = Timeframe.parse(timeframe)
        lo, hi = bar_span(start, end)
        if limit is not None:
            _check_limit(limit)
        order = "DESC" if limit is not None else "ASC"
        rows = self._fetch(
            f"""SELECT symbol, timeframe, (extract(epoch FROM "timestamp") * 1000000)::bigint,
                       open, high, low, close, volume, vwap, trade_count
                FROM {self._source(tf)}
                WHERE symbol = %s AND timeframe = %s
                  AND "timestamp" >= %s AND "timestamp" < %s
                ORDER BY "timestamp" {order}
                {"LIMIT %s" if limit is not None else ""}""",
            [symbol, tf.value, lo, hi] + ([limit] if limit is not None else []),
        )
        frame = _bar_frame(rows)
        return frame.iloc[::-1].reset_index(drop=True) if limit is not None else frame

    def gaps(
        self, symbol: str, timeframe: Timeframe | str, start: datetime, end: datetime
    ) -> pd.DataFrame:
        """Missing intervals in [start, end): gap_start (first missing bar), gap_end (exclusive),
        missing_bars. Calendar-naive: every grid point of the timeframe is expected."""
        validate_symbol(symbol)
        tf = Timeframe.parse(timeframe)
        if start is None or end is None:
            raise ValidationError("gaps needs both start and end")
        lo, hi = bar_span(start, end)
        step = tf.seconds
        first = -(-int(lo.timestamp()) // step) * step  # first grid point >= start
        stop = -(-int(hi.timestamp()) // step) * step  # first grid point >= end
        if first >= stop:
            return _empty_gaps()
        first_ts = pd.Timestamp(first, unit="s", tz="UTC").to_pydatetime()
        stop_ts = pd.Timestamp(stop, unit="s", tz="UTC").to_pydatetime()
        rows = self._fetch(
            f"""WITH present AS (
                    SELECT "timestamp" AS ts FROM {self._source(tf)}
                    WHERE symbol = %(symbol)s AND timeframe = %(tf)s
                      AND "timestamp" >= %(first)s AND "timestamp" < %(stop)s
                    UNION ALL SELECT %(first)s::timestamptz - %(step)s::interval
                    UNION ALL SELECT %(stop)s::timestamptz
                ), steps AS (
                    SELECT ts, lead(ts) OVER (ORDER BY ts) AS next_ts FROM present
                )
                SELECT (extract(epoch FROM ts + %(step)s::interval) * 1000000)::bigint,
                       (extract(epoch FROM next_ts) * 1000000)::bigint,
                       (extract(epoch FROM next_ts - ts) / %(seconds)s)::bigint - 1
                FROM steps WHERE next_ts - ts > %(step)s::interval ORDER BY ts""",
            {
                "symbol": symbol,
                "tf": tf.value,
                "first": first_ts,
                "stop": stop_ts,
                "step": timedelta(seconds=step),
                "seconds": step,
            },
        )
        if not rows:
            return _empty_gaps()
        starts, ends, missing = zip(*rows, strict=True)
        return pd.DataFrame(
            {
                "gap_start": _from_micros(starts),
                "gap_end": _from_micros(ends),
                "missing_bars": np.asarray(missing, dtype="int64"),
            }
        )

    def coverage(self, symbols: Iterable[str] | None = None) -> pd.DataFrame:
        """Per symbol and timeframe: earliest, latest, bars (what data monitoring shows)."""
        where, params = "", []
        if symbols is not None:
            where, params = "WHERE symbol = ANY(%s)", [validate_symbols(symbols)]
        rows = self._fetch(
            f"""SELECT symbol, timeframe,
                       (extract(epoch FROM min("timestamp")) * 1000000)::bigint,
                       (extract(epoch FROM max("timestamp")) * 1000000)::bigint,
                       count(*)
                FROM {READ_VIEW} {where}
                GROUP BY symbol, timeframe ORDER BY symbol, timeframe""",
            params,
        )
        columns = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
        return pd.DataFrame(
            {
                "symbol": pd.array(columns[0], dtype="string"),
                "timeframe": pd.array(columns[1], dtype="string"),
                "earliest": _from_micros(columns[2]),
                "latest": _from_micros(columns[3]),
                "bars": np.asarray(columns[4], dtype="int64"),
            }
        )

    def metadata(self, symbols: Iterable[str] | None = None) -> pd.DataFrame:
        """The `symbol_metadata` rows: earliest, latest, total bars stored, last fetched."""
        where, params = "", []
        if symbols is not None:
            where, params = "WHERE symbol = ANY(%s)", [validate_symbols(symbols)]
        rows = self._fetch(
            f"""SELECT symbol, name, earliest_data_date, latest_data_date, total_bars_stored,
                       last_fetched_at
                FROM {METADATA} {where} ORDER BY symbol""",
            params,
        )
        frame = pd.DataFrame(
            rows,
            columns=[
                "symbol",
                "name",
                "earliest_data_date",
                "latest_data_date",
                "total_bars_stored",
                "last_fetched_at",
            ],
        )
        for col in ("earliest_data_date", "latest_data_date", "last_fetched_at"):
            frame[col] = pd.to_datetime(frame[col], utc=True)
        frame["total_bars_stored"] = frame["total_bars_stored"].astype("int64")
        return frame

    # ---- plumbing --------------------------------------------------------------------------

    def _source(self, timeframe: Timeframe) -> str:
        return READ_VIEW if timeframe in ROLLUPS else TABLE

    def _fetch(self, query: str, params: Any) -> list[tuple[Any, ...]]:
        with self._connection() as pg:
            return pg.execute(query, params).fetchall()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """The psycopg connection of one pooled SQLAlchemy transaction (committed on success)."""
        with self._translate(), self.engine.begin() as conn:
            yield _driver(conn)

    @contextmanager
    def _autocommit(self) -> Iterator[psycopg.Connection[Any]]:
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield _driver(conn)

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except (psycopg.OperationalError, DBAPIError) as e:
            cause = e.orig if isinstance(e, DBAPIError) else e
            if isinstance(cause, psycopg.OperationalError):
                raise DependencyUnavailable(f"PostgreSQL bar store unavailable: {cause}") from e
            raise StoreError(f"PostgreSQL bar store failed: {cause}") from e
        except (psycopg.Error, SQLAlchemyError) as e:
            raise StoreError(f"PostgreSQL bar store failed: {e}") from e

    @staticmethod
    def _existing_mode(pg: psycopg.Connection[Any]) -> Mode | None:
        row = pg.execute(
            "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [TABLE]
        ).fetchone()
        if row is None:
            return None
        if row[0] == "p":
            return "native"
        hyper = pg.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
        ).fetchone()
        if hyper and hyper[0]:
            found = pg.execute(
                "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s",
                [TABLE],
            ).fetchone()
            if found:
                return "timescale"
        raise StoreError(
            f"{TABLE} exists but is neither partitioned nor a hypertable; "
            "rename it and let the store create its own"
        )

    @staticmethod
    def _compression_enabled(pg: psycopg.Connection[Any]) -> bool:
        row = pg.execute(
            "SELECT compression_enabled FROM timescaledb_information.hypertables "
            "WHERE hypertable_name = %s",
            [TABLE],
        ).fetchone()
        return bool(row and row[0])


# ---- helpers -------------------------------------------------------------------------------


def _driver(conn: Connection) -> psycopg.Connection[Any]:
    raw = conn.connection.driver_connection
    if not isinstance(raw, psycopg.Connection):
        raise ConfigError("PostgresBarStore needs the psycopg 3 driver")
    return raw


def _prepare(bars: pd.DataFrame) -> _Batch:
    """Validate, group rows by (symbol, timeframe) in time order, and compute their spans.

    Frames from providers are usually grouped and sorted already; that is checked in O(n) and
    the sort skipped.
    """
    frame = validate_bars(bars)
    if frame.empty:
        return _Batch(frame, pd.DataFrame(), pd.DataFrame())
    counts = frame["trade_count"].dropna()
    if len(counts) and int(counts.max()) > _INT4_MAX:
        raise ValidationError(f"bars have a trade_count above {_INT4_MAX}")
    symbol_codes, symbol_names = pd.factorize(frame["symbol"])
    tf_codes, tf_names = pd.factorize(frame["timeframe"])
    key = symbol_codes.astype("int64") * len(tf_names) + tf_codes
    ts = frame["ts"].to_numpy(dtype="datetime64[ns]").view("int64")
    step = np.diff(key)
    if not bool(np.all((step > 0) | ((step == 0) & (np.diff(ts) > 0)))):
        order = np.lexsort((ts, key))
        frame = frame.take(order).reset_index(drop=True)
        key, ts = key[order], ts[order]
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    ends = np.append(starts[1:], len(key))
    run_key = key[starts]
    keys = pd.DataFrame(
        {
            "symbol": np.asarray(symbol_names, dtype=object)[run_key // len(tf_names)],
            "timeframe": np.asarray(tf_names, dtype=object)[run_key % len(tf_names)],
            "lo": pd.to_datetime(ts[starts], unit="ns", utc=True),
            "hi": pd.to_datetime(ts[ends - 1], unit="ns", utc=True),
            "rows": ends - starts,
        }
    )
    # Sorted by symbol: metadata rows are then locked in one order by every writer.
    symbols = (
        keys.groupby("symbol", sort=True)
        .agg(earliest=("lo", "min"), latest=("hi", "max"), rows=("rows", "sum"))
        .reset_index()
    )
    return _Batch(frame, keys, symbols)


def _copy(pg: psycopg.Connection[Any], table: str, batch: _Batch) -> None:
    """Binary COPY of a validated, key-sorted bar frame into `table`."""
    with (
        pg.cursor() as cur,
        cur.copy(f"COPY {table} ({_COLUMN_LIST}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.write(_COPY_HEADER)
        for chunk in _binary_rows(batch):
            copy.write(chunk)
        copy.write(_COPY_TRAILER)


def _binary_rows(batch: _Batch) -> Iterator[memoryview]:
    """PostgreSQL binary COPY tuples for the frame, built with numpy instead of row by row.

    Rows of one (symbol, timeframe) with the same NULL pattern share one fixed layout, so each
    such run is a single structured array: field count, then (length, big-endian value) pairs.
    """
    frame = batch.frame
    micros = frame["ts"].to_numpy(dtype="datetime64[ns]").astype("datetime64[us]").view("int64")
    pg_time = micros - _PG_EPOCH_US
    prices = {c: frame[c].to_numpy(dtype="float64") for c in ("open", "high", "low", "close")}
    volume = frame["volume"].to_numpy(dtype="float64")
    vwap = frame["vwap"].to_numpy(dtype="float64", na_value=np.nan)
    counts = frame["trade_count"]
    count_null = counts.isna().to_numpy()
    count_values = counts.fillna(0).to_numpy(dtype="int64")
    vwap_null = np.isnan(vwap)
    # The frame is sorted by key: runs change at key boundaries and where the NULLs change.
    key_ends = batch.keys["rows"].to_numpy().cumsum()
    nulls = vwap_null * 2 + count_null
    bounds = np.union1d(key_ends[:-1], np.flatnonzero(np.diff(nulls)) + 1)
    starts = np.concatenate(([0], bounds)).astype("int64")
    ends = np.concatenate((bounds, [len(frame)])).astype("int64")
    key_of_run = np.searchsorted(key_ends, starts, side="right")
    names = [
        (str(sym).encode("ascii"), str(tf).encode("ascii"))
        for sym, tf in zip(batch.keys["symbol"], batch.keys["timeframe"], strict=True)
    ]
    for a, b, key in zip(starts.tolist(), ends.tolist(), key_of_run.tolist(), strict=True):
        symbol, timeframe = names[key]
        has_vwap, has_count = not vwap_null[a], not count_null[a]
        fields: list[tuple[str, str]] = [
            ("n", ">i2"),
            ("symbol_len", ">i4"),
            ("symbol", f"S{len(symbol)}"),
            ("timeframe_len", ">i4"),
            ("timeframe", f"S{len(timeframe)}"),
            ("ts_len", ">i4"),
            ("ts", ">i8"),
        ]
        for name in ("open", "high", "low", "close", "volume"):
            fields += [(f"{name}_len", ">i4"), (name, ">f8")]
        fields.append(("vwap_len", ">i4"))
        if has_vwap:
            fields.append(("vwap", ">f8"))
        fields.append(("count_len", ">i4"))
        if has_count:
            fields.append(("count", ">i4"))
        rows = np.empty(b - a, dtype=np.dtype(fields))
        rows["n"] = len(_COLUMNS)
        rows["symbol_len"], rows["symbol"] = len(symbol), symbol
        rows["timeframe_len"], rows["timeframe"] = len(timeframe), timeframe
        rows["ts_len"], rows["ts"] = 8, pg_time[a:b]
        for name, values in (*prices.items(), ("volume", volume)):
            rows[f"{name}_len"], rows[name] = 8, values[a:b]
        rows["vwap_len"] = 8 if has_vwap else -1
        if has_vwap:
            rows["vwap"] = vwap[a:b]
        rows["count_len"] = 4 if has_count else -1
        if has_count:
            rows["count"] = count_values[a:b]
        yield rows.view(np.uint8).data  # a memoryview: psycopg sends slices, no copy


def _bar_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    if not rows:
        return empty_bars()
    columns = list(zip(*rows, strict=True))
    frame = pd.DataFrame(
        {
            "symbol": bar_strings(columns[0]),
            "timeframe": bar_strings(columns[1]),
            "ts": _from_micros(columns[2]),
            **{
                name: np.asarray(values, dtype="float64")
                for name, values in zip(
                    ("open", "high", "low", "close", "volume"), columns[3:8], strict=True
                )
            },
            "vwap": np.array([np.nan if v is None else v for v in columns[8]], dtype="float64"),
            "trade_count": pd.array(columns[9], dtype="Int64"),
        }
    )
    return frame.loc[:, list(BAR_COLUMNS)]


def _from_micros(values: Iterable[Any]) -> pd.Series:
    micros = np.asarray(list(values), dtype="int64")
    return pd.Series(pd.to_datetime(micros, unit="us", utc=True).as_unit("ns"))


def _datetimes(values: pd.Series) -> list[datetime]:
    return [ts.to_pydatetime() for ts in values]


def _empty_gaps() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "gap_start": pd.Series(dtype="datetime64[ns, UTC]"),
            "gap_end": pd.Series(dtype="datetime64[ns, UTC]"),
            "missing_bars": pd.Series(dtype="int64"),
        }
    )


def _check_limit(limit: object) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer):
        raise ValidationError(f"limit must be an integer, got {type(limit).__name__}")
    if not 1 <= int(limit) <= _MAX_LIMIT:
        raise ValidationError(f"limit must be between 1 and {_MAX_LIMIT}, got {limit}")
