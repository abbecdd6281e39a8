"""`Lake`: OHLCV history per resolution tier, rollups, gaps and SQL features over one backend.

The same object runs on chdb in this process, on a ClickHouse server, or over the lake gateway of
the process that owns the embedded lake; only the backend differs, so research and live read the
same bars through the same SQL.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import zoneinfo
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Self

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tradeos_lab.bars import (
    BAR_COLUMNS,
    BAR_STRING_DTYPE,
    bar_span,
    bar_strings,
    empty_bars,
    validate_bars,
)
from tradeos_lab.errors import ValidationError
from tradeos_lab.settings import Settings
from tradeos_lab.stores.lake import sql
from tradeos_lab.stores.lake.backend import (
    LakeBackend,
    check_table,
    to_wire,
)
from tradeos_lab.stores.lake.schema import (
    LEDGER_DDL,
    LEDGER_TABLE,
    PENDING_DDL,
    PENDING_TABLE,
    ROLLS_INTO,
    TIERS,
    bars_ddl,
    bars_table,
    ttl_clause,
    ttl_days_for,
)
from tradeos_lab.symbols import Timeframe, validate_symbol, validate_symbols

log = logging.getLogger(__name__)

# Open-ended reads use these bounds, so every statement has the same bound parameters.
_MAX_LIMIT = 10_000_000
_MAX_WINDOW = 100_000
_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
# Tiers computed from a finer one: reading them first settles the pending rollups.
_ROLLUP_TARGETS = frozenset(ROLLS_INTO.values())


class Lake:
    """OHLCV lake over a `LakeBackend`; implements `BarStore`.

    Thread-safe: the backend serialises statements, and writes and rollup refreshes hold one
    lock, so a refresh sees every write this object finished before it.
    """

    def __init__(
        self,
        backend: LakeBackend,
        *,
        ttl_days: Mapping[Timeframe, int] | None = None,
        ensure_schema: bool = True,
    ) -> None:
        """`ttl_days` (per tier, 0 = forever) is enforced on the tables when given; without it
        the tables keep the retention their owner gave them. Either way the tables' own TTLs are
        what the lake then works by."""
        self._backend = backend
        self._write_lock = threading.RLock()
        self._version_lock = threading.Lock()
        self._last_version = 0
        if ensure_schema:
            self.ensure_schema(ttl_days)
        self._ttl_days = self._table_ttl_days()

    # ---- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: Settings) -> Lake:
        """The lake the settings name: embedded chdb under the data directory, or a server.

        Raises `LakeInUse` when another process (the running stack) owns the embedded lake;
        connect through its gateway with `Lake.over_gateway` instead.
        """
        ttl = {tf: settings.lake_ttl_days(tf) for tf in TIERS}
        path = settings.chdb_lake_path
        backend: LakeBackend
        if path is not None:
            from tradeos_lab.stores.lake.chdb_backend import ChdbBackend

            backend = ChdbBackend(path)
        else:
            from tradeos_lab.stores.lake.server_backend import ClickHouseServerBackend

            assert settings.lake_url is not None  # a lake not on chdb is a server's
            backend = ClickHouseServerBackend(settings.lake_url.get_secret_value())
        try:
            return cls(backend, ttl_days=ttl)
        except BaseException:
            backend.close()
            raise

    @classmethod
    def over_gateway(cls, url: str, token: str, *, timeout: float = 300.0) -> Lake:
        """The lake owned by another process, reached through its lake gateway."""
        from tradeos_lab.stores.lake.gateway import GatewayBackend

        backend = GatewayBackend(url, token, timeout=timeout)
        try:
            # The owner created the schema; its tables carry the retention this client works by.
            return cls(backend, ensure_schema=False)
        except BaseException:
            backend.close()
            raise

    @property
    def backend(self) -> LakeBackend:
        return self._backend

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Lake({self._backend!r})"

    # ---- raw SQL ---------------------------------------------------------------------------

    def query(
        self, sql_text: str, params: Mapping[str, Any] | None = None, *, settle: bool = True
    ) -> pd.DataFrame:
        """Run SQL with `{name:Type}` parameters bound server-side; rows as a DataFrame.

        Tier tables store timestamps as DateTime64 and come back as UTC datetimes; a 32-bit
        DateTime expression (e.g. `now()`) comes back as epoch seconds, as ClickHouse's Arrow
        output writes it: wrap it in `toDateTime64(x, 0, 'UTC')` for a timestamp. Pending
        rollups are settled first, so SQL over a coarse tier sees every finished write;
        `settle=False` skips that for SQL that reads no tier (a health probe, system tables).
        """
        if settle:
            self.refresh_rollups()
        return self._query(sql_text, params)

    def _query(self, sql_text: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        return _to_pandas(self._backend.query_arrow(sql_text, to_wire(params)))

    def command(self, sql_text: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns no rows (DDL, INSERT ... SELECT, OPTIMIZE)."""
        self._backend.command(sql_text, to_wire(params))

    def insert_df(self, table: str, df: pd.DataFrame) -> int:
        """Append a DataFrame to `table` (columns by name); returns the number of rows."""
        check_table(table)
        if not isinstance(df, pd.DataFrame):
            raise ValidationError("insert_df needs a pandas DataFrame")
        if df.empty:
            return 0
        try:
            data = pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ValidationError(f"cannot convert the DataFrame for {table}: {e}") from e
        return self._backend.insert_arrow(table, data)

    # ---- schema ----------------------------------------------------------------------------

    def ensure_schema(self, ttl_days: Mapping[Timeframe, int] | None = None) -> None:
        """Create the tier tables and the gap ledger; with `ttl_days`, bring each tier's TTL to
        it (0 removes the TTL)."""
        for tf in TIERS:
            self._backend.command(bars_ddl(tf, ttl_days_for(ttl_days, tf)), {})
        self._backend.command(LEDGER_DDL, {})
        self._backend.command(PENDING_DDL, {})
        if ttl_days is None:
            return
        current = self._table_ttls()
        for tf in TIERS:
            want = ttl_clause(ttl_days_for(ttl_days, tf))
            if current.get(tf, "") == want:
                continue
            # New retention applies from the next merge on; rewriting every part now would stall
            # the stack's start for a large lake.
            if want:
                self._backend.command(
                    f"ALTER TABLE {bars_table(tf)} MODIFY TTL {want} "
                    "SETTINGS materialize_ttl_after_modify = 0",
                    {},
                )
            else:
                self._backend.command(f"ALTER TABLE {bars_table(tf)} REMOVE TTL", {})
        self._ttl_days = self._table_ttl_days()

    def table_ttl(self, timeframe: Timeframe | str) -> str:
        """The TTL expression of one tier's table ('' when bars are kept forever)."""
        return self._table_ttls().get(Timeframe.parse(timeframe), "")

    def _table_ttls(self) -> dict[Timeframe, str]:
        frame = self._query(
            "SELECT name, engine_full FROM system.tables "
            "WHERE database = currentDatabase() AND name IN {names:Array(String)}",
            {"names": [bars_table(tf) for tf in TIERS]},
        )
        engines = dict(zip(frame["name"], frame["engine_full"], strict=True)) if len(frame) else {}
        ttls = {}
        for tf in TIERS:
            found = re.search(r"\bTTL (.+?)(?: SETTINGS |$)", str(engines.get(bars_table(tf), "")))
            ttls[tf] = found.group(1).strip() if found else ""
        return ttls

    def _table_ttl_days(self) -> dict[Timeframe, int]:
        """Retention per tier as the tables carry it (a TTL of another form counts as none)."""
        days = {}
        for tf, ttl in self._table_ttls().items():
            found = re.fullmatch(r"ts \+ toIntervalDay\((\d+)\)", ttl)
            days[tf] = int(found.group(1)) if found else 0
        return days

    # ---- BarStore --------------------------------------------------------------------------

    def write_bars(self, bars: pd.DataFrame) -> int:
        """Validate and store bars idempotently; the coarser tiers follow on their next read.

        Loading the same bars twice stores them once (reads use FINAL); a corrected bar wins
        over the earlier one. The written spans are queued in `rollup_pending`, and the coarser
        tiers (1m -> 5m -> 15m -> 1h -> 1d, computed by the engine from the finer tier) are
        recomputed over them by `refresh_rollups`, which every read of a coarse tier runs first
        and the stack owner runs every few seconds. So a live feed writing a bar at a time costs
        two small inserts, not five, and a backfill in chunks recomputes a coarse bucket once per
        refresh rather than once per chunk.
        A coarse bar written directly stands until finer bars of its bucket arrive.
        """
        frame = validate_bars(bars)
        if frame.empty:
            return 0
        names = list(frame["timeframe"].unique())
        with self._write_lock:
            for tf_name in names:
                tf = Timeframe.parse(tf_name)
                part = frame if len(names) == 1 else frame[frame["timeframe"] == tf_name]
                part = self._within_retention(part, tf)
                if part.empty:
                    continue
                version = self._next_version()
                data = _bar_arrow(part, version)
                # validate_bars rejected duplicate (symbol, ts): the batch is unique by key.
                self._backend.insert_arrow(bars_table(tf), data, unique=True)
                ranges = _ranges(data, tf)
                if tf in ROLLS_INTO:
                    # Queued after the bars: a refresh that sees the span also sees its bars.
                    self._backend.insert_arrow(PENDING_TABLE, _pending(ranges, tf, version))
                self._close_filled_gaps({tf: ranges})
        return len(frame)

    def refresh_rollups(self) -> int:
        """Recompute the coarser tiers over every span written since the last refresh.

        Returns how many queued spans were settled (0 when nothing was pending). Runs before
        every read of a coarse tier, so callers rarely need it; call it to settle the lake
        after a bulk load, before timing reads or handing the lake to raw SQL elsewhere.
        """
        with self._write_lock:
            pending = self._backend.query_arrow(sql.PENDING, {})
            if pending.num_rows == 0:
                return 0
            queued = _to_pandas(pending)
            touched: dict[Timeframe, pa.Table] = {}
            carried: pd.DataFrame | None = None  # spans recomputed in the finer tier
            for source, target in ROLLS_INTO.items():
                spans = queued.loc[queued["timeframe"] == source.value, ["symbol", "lo", "hi"]]
                if carried is not None:
                    spans = pd.concat([spans, carried], ignore_index=True)
                if spans.empty:
                    continue
                spans = _coalesce(spans, target)
                for batch in _rounds(spans):
                    self._rollup(source, target, batch)
                touched[target] = pa.Table.from_pandas(spans, preserve_index=False)
                carried = spans
            self._close_filled_gaps(touched)
            done = pending.append_column("done", pa.array(np.ones(pending.num_rows, np.uint8)))
            self._backend.insert_arrow(PENDING_TABLE, done)
            return int(pending.num_rows)

    def _settle(self, timeframe: Timeframe | str | None = None) -> None:
        """Settle pending rollups before reading `timeframe` (any tier when None)."""
        if timeframe is None or Timeframe.parse(timeframe) in _ROLLUP_TARGETS:
            self.refresh_rollups()

    def _within_retention(self, frame: pd.DataFrame, timeframe: Timeframe) -> pd.DataFrame:
        """Drop bars older than the tier's retention before they are written.

        ClickHouse would delete them at the next TTL merge, possibly between the insert and the
        rollup; skipping them up front keeps the coarser tiers deterministic. Older history goes
        in at a coarser timeframe whose retention covers it.
        """
        days = ttl_days_for(self._ttl_days, timeframe)
        if days <= 0:
            return frame
        cutoff = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=days)
        keep = frame["ts"] >= cutoff
        if bool(keep.all()):
            return frame
        log.warning(
            "lake: %d %s bars are older than the %d-day retention of that tier and were not "
            "stored; write older history at a coarser timeframe",
            int((~keep).sum()),
            timeframe.value,
            days,
        )
        return frame[keep]

    def read_bars(
        self,
        symbol: str,
        timeframe: Timeframe | str,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Bars in [start, end), oldest first; with `limit`, the latest `limit` of them."""
        validate_symbol(symbol)
        tf = Timeframe.parse(timeframe)
        lo, hi = bar_span(start, end)
        if limit is not None:
            _check_int(limit, "limit", 1, _MAX_LIMIT)
        self._settle(tf)
        text = sql.READ_BARS.format(
            table=bars_table(tf),
            order="DESC" if limit is not None else "ASC",
            limit="LIMIT {limit:UInt64}" if limit is not None else "",
        )
        params: dict[str, Any] = {"symbol": symbol, "start": lo, "end": hi}
        if limit is not None:
            params["limit"] = limit
        table = self._backend.query_arrow(text, to_wire(params))
        frame = _bar_frame(table, tf)
        if limit is not None:
            frame = frame.iloc[::-1].reset_index(drop=True)
        return frame

    def gaps(
        self, symbol: str, timeframe: Timeframe | str, start: datetime, end: datetime
    ) -> pd.DataFrame:
        """Missing intervals in [start, end): gap_start (first missing bar), gap_end (exclusive).

        Calendar-naive: every grid point of the timeframe is expected (24/7 markets); callers
        with trading sessions filter the result by their calendar.
        """
        validate_symbol(symbol)
        tf = Timeframe.parse(timeframe)
        if start is None or end is None:
            raise ValidationError("gaps needs both start and end")
        lo, hi = bar_span(start, end)
        step = tf.seconds
        first = -(-int(lo.timestamp()) // step) * step
        stop = -(-int(hi.timestamp()) // step) * step
        if first >= stop:
            return _empty_gaps()
        self._settle(tf)
        table = self._backend.query_arrow(
            sql.GAPS.format(table=bars_table(tf)),
            to_wire(
                {
                    "symbol": symbol,
                    "start": pd.Timestamp(first, unit="s", tz="UTC"),
                    "end": hi,
                    "first": first,
                    "stop": stop,
                    "step": step,
                }
            ),
        )
        frame = _to_pandas(table)
        if frame.empty:
            return _empty_gaps()
        frame["missing_bars"] = frame["missing_bars"].astype("int64")
        return frame.reset_index(drop=True)

    def coverage(self, symbols: Iterable[str] | None = None) -> pd.DataFrame:
        """Per symbol and timeframe: earliest, latest, bars (what the monitoring queries read)."""
        params: dict[str, Any] = {}
        where = ""
        if symbols is not None:
            params["symbols"] = validate_symbols(symbols)
            where = "WHERE symbol IN {symbols:Array(String)}"
        parts = []
        for i, tf in enumerate(TIERS):
            params[f"tf_{i}"] = tf.value
            parts.append(sql.COVERAGE_PART.format(i=i, table=bars_table(tf), where=where))
        frame = self.query(" UNION ALL ".join(parts), params)  # settles every tier first
        if frame.empty:
            return pd.DataFrame(
                {
                    "symbol": pd.Series(dtype="string"),
                    "timeframe": pd.Series(dtype="string"),
                    "earliest": pd.Series(dtype="datetime64[ns, UTC]"),
                    "latest": pd.Series(dtype="datetime64[ns, UTC]"),
                    "bars": pd.Series(dtype="int64"),
                }
            )
        order = {tf.value: i for i, tf in enumerate(TIERS)}
        frame["symbol"] = frame["symbol"].astype("string")
        frame["timeframe"] = frame["timeframe"].astype("string")
        frame["bars"] = frame["bars"].astype("int64")
        frame = frame.sort_values(
            ["symbol", "timeframe"], key=lambda c: c.map(order) if c.name == "timeframe" else c
        )
        return frame.reset_index(drop=True)

    # ---- rollups ---------------------------------------------------------------------------

    def resample(
        self,
        symbols: str | Iterable[str] | None,
        timeframe: Timeframe | str,
        *,
        source: Timeframe | str = Timeframe.M1,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pd.DataFrame:
        """Bars of `timeframe` computed now by the engine from the `source` tier (no storing).

        The same aggregation the rollups store; `symbols=None` takes every symbol.
        """
        tf = Timeframe.parse(timeframe)
        src = Timeframe.parse(source)
        if tf.seconds <= src.seconds or tf.seconds % src.seconds:
            raise ValidationError(f"cannot resample {src.value} bars to {tf.value}")
        lo, hi = bar_span(start, end)
        params: dict[str, Any] = {"step": tf.seconds, "lo": lo, "hi": hi}
        where = "ts >= {lo:DateTime64(6, 'UTC')} AND ts < {hi:DateTime64(6, 'UTC')}"
        if symbols is not None:
            params["symbols"] = validate_symbols(symbols)
            where += " AND symbol IN {symbols:Array(String)}"
        self._settle(src)
        aggregate = sql.AGGREGATE.format(source=bars_table(src), where=where)
        table = self._backend.query_arrow(sql.RESAMPLE.format(aggregate=aggregate), to_wire(params))
        return _bar_frame(table, tf)

    def _rollup(self, source: Timeframe, target: Timeframe, ranges: pa.Table) -> None:
        los = ranges["lo"].to_pylist()
        his = ranges["hi"].to_pylist()
        # Per-symbol bounds only narrow the work; when every symbol spans the same buckets the
        # shared bounds say it all and the engine skips two lookups per row.
        same_span = len(set(los)) == 1 and len(set(his)) == 1
        where = sql.ROLLUP_WHERE_SHARED if same_span else sql.ROLLUP_WHERE
        aggregate = sql.AGGREGATE.format(source=bars_table(source), where=where)
        params: dict[str, Any] = {
            "step": target.seconds,
            "symbols": ranges["symbol"].to_pylist(),
            "lo": pd.Timestamp(min(los), unit="s", tz="UTC"),
            "hi": pd.Timestamp(max(his), unit="s", tz="UTC"),
            # A rollup computed later saw every earlier write, so it must win.
            "version": self._next_version(),
        }
        if not same_span:
            params.update(los=los, his=his)
        self._backend.command(
            sql.ROLLUP_INSERT.format(target=bars_table(target), aggregate=aggregate),
            to_wire(params),
        )

    def _next_version(self) -> int:
        with self._version_lock:
            version = max(time.time_ns(), self._last_version + 1)
            self._last_version = version
            return version

    # ---- gap ledger ------------------------------------------------------------------------

    def record_gaps(
        self, symbol: str, timeframe: Timeframe | str, start: datetime, end: datetime
    ) -> pd.DataFrame:
        """Detect the gaps in [start, end) and record them in the gap ledger; returns them."""
        found = self.gaps(symbol, timeframe, start, end)
        if found.empty:
            return found
        tf = Timeframe.parse(timeframe)
        now = pd.Timestamp.now(tz="UTC")
        rows = pd.DataFrame(
            {
                "symbol": symbol,
                "timeframe": tf.value,
                "gap_start": found["gap_start"],
                "gap_end": found["gap_end"],
                "missing_bars": found["missing_bars"].astype("uint64"),
                "detected_at": now,
                "filled_at": pd.Series([pd.NaT] * len(found), dtype="datetime64[ns, UTC]"),
                "version": np.uint64(self._next_version()),
            }
        )
        self.insert_df(LEDGER_TABLE, rows)
        return found

    def gap_ledger(
        self,
        symbol: str | None = None,
        timeframe: Timeframe | str | None = None,
        *,
        open_only: bool = False,
    ) -> pd.DataFrame:
        """Recorded gaps: symbol, timeframe, gap_start, gap_end, missing_bars, detected_at,
        filled_at (NaT while the gap is open)."""
        clauses = ["1"]
        params: dict[str, Any] = {}
        if symbol is not None:
            params["symbol"] = validate_symbol(symbol)
            clauses.append("symbol = {symbol:String}")
        if timeframe is not None:
            params["timeframe"] = Timeframe.parse(timeframe).value
            clauses.append("timeframe = {timeframe:String}")
        if open_only:
            clauses.append("filled_at IS NULL")
        # Settling closes the gaps that pending rollups of coarse tiers fill.
        frame = self.query(sql.LEDGER.format(where=" AND ".join(clauses)), params)
        if frame.empty:
            return pd.DataFrame(
                {
                    "symbol": pd.Series(dtype="string"),
                    "timeframe": pd.Series(dtype="string"),
                    "gap_start": pd.Series(dtype="datetime64[ns, UTC]"),
                    "gap_end": pd.Series(dtype="datetime64[ns, UTC]"),
                    "missing_bars": pd.Series(dtype="int64"),
                    "detected_at": pd.Series(dtype="datetime64[ns, UTC]"),
                    "filled_at": pd.Series(dtype="datetime64[ns, UTC]"),
                }
            )
        frame["missing_bars"] = frame["missing_bars"].astype("int64")
        frame["filled_at"] = pd.to_datetime(frame["filled_at"], utc=True)
        return frame

    def refresh_gap_ledger(
        self, symbol: str | None = None, timeframe: Timeframe | str | None = None
    ) -> int:
        """Mark every open ledger gap that is now fully covered as filled; returns how many."""
        ledger = self.gap_ledger(symbol, timeframe, open_only=True)
        return self._mark_filled(ledger)

    def _close_filled_gaps(self, touched: Mapping[Timeframe, pa.Table]) -> None:
        symbols = sorted({s for r in touched.values() for s in r["symbol"].to_pylist()})
        lo = min(min(r["lo"].to_pylist()) for r in touched.values())
        hi = max(max(r["hi"].to_pylist()) for r in touched.values())
        open_gaps = self._query(
            sql.OPEN_GAPS,
            {
                "symbols": symbols,
                "timeframes": [tf.value for tf in touched],
                "lo": pd.Timestamp(lo, unit="s", tz="UTC"),
                "hi": pd.Timestamp(hi, unit="s", tz="UTC"),
            },
        )
        if not open_gaps.empty:
            self._mark_filled(open_gaps)

    def _mark_filled(self, gaps: pd.DataFrame) -> int:
        filled = []
        for row in gaps.itertuples(index=False):
            tf = Timeframe.parse(row.timeframe)
            present = self._query(
                sql.PRESENT_IN_RANGE.format(table=bars_table(tf)),
                {"symbol": row.symbol, "start": row.gap_start, "end": row.gap_end},
            )
            if int(present["present"].iloc[0]) >= int(str(row.missing_bars)):
                filled.append(row)
        if not filled:
            return 0
        done = pd.DataFrame(filled)
        now = pd.Timestamp.now(tz="UTC")
        rows = pd.DataFrame(
            {
                "symbol": done["symbol"].astype(str),
                "timeframe": done["timeframe"].astype(str),
                "gap_start": done["gap_start"],
                "gap_end": done["gap_end"],
                "missing_bars": done["missing_bars"].astype("uint64"),
                "detected_at": done["detected_at"],
                "filled_at": now,
                "version": np.uint64(self._next_version()),
            }
        )
        self.insert_df(LEDGER_TABLE, rows)
        return len(rows)

    # ---- features: signal enrichment (ATR regime, volume percentile, opening range) ---------

    def atr_regime(
        self,
        symbol: str,
        timeframe: Timeframe | str,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        window: int = 14,
        lookback: int = 100,
        low: float = 0.25,
        high: float = 0.75,
    ) -> pd.DataFrame:
        """ATR (simple average of true range over `window` bars), its mid-rank percentile among
        the last `lookback` ATRs, and the regime: low / normal / high (None until warmed up).

        Columns: symbol, ts, tr, atr, atr_pct, regime.
        """
        _check_int(window, "window", 1, _MAX_WINDOW)
        _check_int(lookback, "lookback", 1, _MAX_WINDOW)
        if not (0.0 <= float(low) < float(high) <= 1.0):
            raise ValidationError("ATR regime thresholds need 0 <= low < high <= 1")
        params = self._feature_params(symbol, start, end, warmup=window + lookback)
        params.update(
            window=window,
            window_1=window - 1,
            lookback=lookback,
            lookback_1=lookback - 1,
            low=float(low),
            high=float(high),
        )
        text = sql.ATR_REGIME.format(source=self._feature_source(timeframe))
        self._settle(timeframe)
        frame = self._query(text, params)
        if "regime" in frame:
            frame["regime"] = frame["regime"].astype("object").where(frame["regime"].notna(), None)
        return frame

    def volume_percentile(
        self,
        symbol: str,
        timeframe: Timeframe | str,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        lookback: int = 100,
    ) -> pd.DataFrame:
        """Mid-rank percentile of each bar's volume among the last `lookback` bars (itself
        included): 1.0 is the busiest bar of the window. Columns: symbol, ts, volume, volume_pct.
        """
        _check_int(lookback, "lookback", 1, _MAX_WINDOW)
        params = self._feature_params(symbol, start, end, warmup=lookback)
        params.update(lookback=lookback, lookback_1=lookback - 1)
        text = sql.VOLUME_PERCENTILE.format(source=self._feature_source(timeframe))
        self._settle(timeframe)
        return self._query(text, params)

    def opening_range_breakout(
        self,
        symbol: str,
        timeframe: Timeframe | str = Timeframe.M1,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        range_minutes: int = 30,
        session_open: str = "00:00",
        session_close: str | None = None,
        tz: str = "UTC",
    ) -> pd.DataFrame:
        """Per session day: the opening range (high/low of the first `range_minutes` after
        `session_open`, local time in `tz`) and its first breakout: the first later bar closing
        above ('up') or below ('down') it before `session_close`.

        Columns: symbol, session, range_bars, or_high, or_low, breakout, breakout_ts,
        breakout_close (breakout fields None when the range held all session).
        """
        validate_symbol(symbol)
        tf = Timeframe.parse(timeframe)
        open_min = _minutes(session_open, "session_open")
        close_min = 24 * 60 if session_close is None else _minutes(session_close, "session_close")
        _check_int(range_minutes, "range_minutes", 1, 24 * 60)
        if (range_minutes * 60) % tf.seconds:
            raise ValidationError(
                f"range_minutes={range_minutes} is not a whole number of {tf.value} bars"
            )
        if not open_min + range_minutes < close_min:
            raise ValidationError("the opening range must end before the session closes")
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValidationError(f"unknown time zone {tz!r}") from None
        lo, hi = bar_span(start, end)
        self._settle(tf)
        frame = self._query(
            sql.OPENING_RANGE_BREAKOUT.format(table=bars_table(tf)),
            {
                "symbol": symbol,
                "start": lo,
                "end": hi,
                "tz": tz,
                "open_min": open_min,
                "range_end_min": open_min + range_minutes,
                "close_min": close_min,
            },
        )
        for col in ("breakout", "breakout_ts", "breakout_close"):
            if col in frame:
                frame[col] = frame[col].astype("object").where(frame[col].notna(), None)
        return frame

    def _feature_params(
        self, symbol: str, start: datetime | None, end: datetime | None, *, warmup: int
    ) -> dict[str, Any]:
        validate_symbol(symbol)
        lo, hi = bar_span(start, end)
        return {"symbol": symbol, "start": lo, "end": hi, "warmup": warmup}

    @staticmethod
    def _feature_source(timeframe: Timeframe | str) -> str:
        return sql.FEATURE_SOURCE.format(table=bars_table(Timeframe.parse(timeframe)))


# ---- helpers ---------------------------------------------------------------------------------


def _check_int(value: object, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValidationError(f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= int(value) <= hi:
        raise ValidationError(f"{name} must be between {lo} and {hi}, got {value}")
    return int(value)


def _minutes(hhmm: str, name: str) -> int:
    found = _HHMM.fullmatch(hhmm) if isinstance(hhmm, str) else None
    if not found:
        raise ValidationError(f"{name} must be HH:MM, got {hhmm!r}")
    return int(found.group(1)) * 60 + int(found.group(2))


def _bar_arrow(frame: pd.DataFrame, version: int) -> pa.Table:
    """A validated bar frame as the Arrow table a tier's insert takes."""
    n = len(frame)
    columns: dict[str, Any] = {
        "symbol": pa.array(frame["symbol"].array),
        "ts": pa.array(frame["ts"].array),
    }
    for name in ("open", "high", "low", "close", "volume", "vwap"):
        columns[name] = pa.array(frame[name].to_numpy(dtype="float64", copy=False))
    columns["trade_count"] = pa.array(frame["trade_count"].array, type=pa.int64())
    columns["version"] = pa.array(np.full(n, version, dtype=np.uint64))
    return pa.table(columns)


def _ranges(data: pa.Table, timeframe: Timeframe) -> pa.Table:
    """Per symbol, the written span [lo, hi) in epoch seconds."""
    # Grouping on dictionary indices hashes each symbol string once, not once per row.
    symbols = pc.dictionary_encode(data["symbol"]).combine_chunks()
    grouped = (
        pa.table({"i": symbols.indices, "ts": data["ts"]})
        .group_by("i")
        .aggregate([("ts", "min"), ("ts", "max")])
    )

    def seconds(column: pa.ChunkedArray) -> pa.Array:
        return pc.cast(pc.cast(column, pa.timestamp("s", tz="UTC")), pa.int64())

    return pa.table(
        {
            "symbol": pc.cast(pc.take(symbols.dictionary, grouped["i"]), pa.string()),
            "lo": seconds(grouped["ts_min"]),
            "hi": pc.add(seconds(grouped["ts_max"]), timeframe.seconds),
        }
    )


def _pending(ranges: pa.Table, timeframe: Timeframe, version: int) -> pa.Table:
    """Rows of `rollup_pending` queuing the spans one write made in `timeframe`."""
    n = ranges.num_rows
    return pa.table(
        {
            "symbol": ranges["symbol"],
            "timeframe": pa.array([timeframe.value] * n),
            "lo": ranges["lo"],
            "hi": ranges["hi"],
            "version": pa.array(np.full(n, version, dtype=np.uint64)),
            "done": pa.array(np.zeros(n, dtype=np.uint8)),
        }
    )


def _coalesce(spans: pd.DataFrame, timeframe: Timeframe) -> pd.DataFrame:
    """Spans widened to whole buckets of `timeframe`, overlapping or touching ones merged per
    symbol; sorted by symbol and start."""
    step = timeframe.seconds
    lo = spans["lo"].to_numpy(dtype="int64") // step * step
    hi = -(-spans["hi"].to_numpy(dtype="int64") // step) * step
    frame = pd.DataFrame({"symbol": spans["symbol"].astype(str).to_numpy(), "lo": lo, "hi": hi})
    frame = frame.sort_values(["symbol", "lo"], ignore_index=True)
    reach = frame.groupby("symbol", sort=False)["hi"].cummax()
    previous = reach.groupby(frame["symbol"], sort=False).shift()
    starts = previous.isna() | (frame["lo"] > previous)
    group = starts.cumsum()
    merged = frame.groupby(group, sort=False).agg(
        symbol=("symbol", "first"), lo=("lo", "min"), hi=("hi", "max")
    )
    return merged.reset_index(drop=True)


def _rounds(spans: pd.DataFrame) -> list[pa.Table]:
    """Disjoint spans split so each batch holds at most one span per symbol (one rollup
    statement bounds each symbol by one span)."""
    order = spans.groupby("symbol", sort=False).cumcount()
    return [
        pa.Table.from_pandas(spans[order == k].reset_index(drop=True), preserve_index=False)
        for k in range(int(order.max()) + 1)
    ]


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    if table.num_columns == 0:
        return pd.DataFrame()
    frame: pd.DataFrame = table.to_pandas(coerce_temporal_nanoseconds=True)
    return frame


def _bar_frame(table: pa.Table, timeframe: Timeframe) -> pd.DataFrame:
    """Query rows as a bar frame with exactly the dtypes of `empty_bars()`."""
    if table.num_rows == 0:
        return empty_bars()
    frame: pd.DataFrame = table.drop_columns(["trade_count"]).to_pandas(
        coerce_temporal_nanoseconds=True
    )
    counts = pc.cast(table["trade_count"], pa.int64()).to_pandas(
        types_mapper={pa.int64(): pd.Int64Dtype()}.get
    )
    frame["symbol"] = frame["symbol"].astype(BAR_STRING_DTYPE)
    frame["timeframe"] = bar_strings([timeframe.value] * len(frame))
    frame["ts"] = frame["ts"].astype("datetime64[ns, UTC]")
    for name in ("open", "high", "low", "close", "volume", "vwap"):
        frame[name] = frame[name].astype("float64")
    frame["trade_count"] = counts.astype("Int64").array
    return frame.loc[:, list(BAR_COLUMNS)]


def _empty_gaps() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "gap_start": pd.Series(dtype="datetime64[ns, UTC]"),
            "gap_end": pd.Series(dtype="datetime64[ns, UTC]"),
            "missing_bars": pd.Series(dtype="int64"),
        }
    )
