"""The lake's tables: one ReplacingMergeTree per resolution tier, and the gap ledger.

Why a table per tier rather than one table partitioned by tier: each tier keeps its own retention
as a plain table TTL (`ALTER ... MODIFY TTL` touches one tier), its own partition size (months of
1m bars, years of 1h bars, one partition of 1d bars), and a rollup reads one table and writes
another, so nothing ever reads the table it is writing. Every SELECT on a tier uses FINAL, so a
bar loaded twice is read once even before the background merge collapses it.
"""

from __future__ import annotations

from collections.abc import Mapping

from tradeos_lab.symbols import Timeframe

TIERS: tuple[Timeframe, ...] = (
    Timeframe.M1,
    Timeframe.M5,
    Timeframe.M15,
    Timeframe.H1,
    Timeframe.D1,
)

# The rollup chain 1m -> 5m -> 15m -> 1h -> 1d: each tier is computed from the one before it.
ROLLS_INTO: dict[Timeframe, Timeframe] = {
    Timeframe.M1: Timeframe.M5,
    Timeframe.M5: Timeframe.M15,
    Timeframe.M15: Timeframe.H1,
    Timeframe.H1: Timeframe.D1,
}

_PARTITION = {
    Timeframe.M1: "toYYYYMM(ts)",
    Timeframe.M5: "toYYYYMM(ts)",
    Timeframe.M15: "toYear(ts)",
    Timeframe.H1: "toYear(ts)",
    Timeframe.D1: "tuple()",
}

LEDGER_TABLE = "gap_ledger"

# Spans written to a tier whose coarser tiers are not recomputed yet (see `Lake.refresh_rollups`).
# A refresh marks its spans done by writing them again with done = 1 (the engine keeps the row
# with the larger `done`); done rows leave a day later, pending ones never expire.
PENDING_TABLE = "rollup_pending"
PENDING_DDL = f"""
CREATE TABLE IF NOT EXISTS {PENDING_TABLE}
(
    symbol LowCardinality(String),
    timeframe LowCardinality(String) COMMENT 'the tier that was written',
    lo Int64 COMMENT 'first written bar, epoch seconds',
    hi Int64 COMMENT 'end of the written span (exclusive), epoch seconds',
    version UInt64 COMMENT 'version of the write that queued the span',
    done UInt8 COMMENT '1 once the coarser tiers were recomputed over the span',
    changed_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(done)
ORDER BY (timeframe, symbol, lo, hi, version)
TTL changed_at + INTERVAL 1 DAY DELETE WHERE done = 1
"""


def bars_table(timeframe: Timeframe) -> str:
    """The table of one tier; names come from the enum, never from callers."""
    return f"bars_{timeframe.value}"


def ttl_clause(days: int) -> str:
    return f"ts + toIntervalDay({int(days)})" if days > 0 else ""


def bars_ddl(timeframe: Timeframe, ttl_days: int) -> str:
    ttl = ttl_clause(ttl_days)
    return f"""
CREATE TABLE IF NOT EXISTS {bars_table(timeframe)}
(
    symbol LowCardinality(String),
    ts DateTime64(0, 'UTC') COMMENT 'bar open time',
    open Float64,
    high Float64,
    low Float64,
    close Float64,
    volume Float64,
    vwap Float64 COMMENT 'NaN when the source gave none',
    vwap_volume Float64 DEFAULT if(isNaN(vwap), 0, volume)
        COMMENT 'volume behind vwap: rollups weight by it, so chained tiers stay exact',
    trade_count Nullable(UInt64),
    version UInt64 COMMENT 'write time in ns: the latest write of a bar wins'
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY {_PARTITION[timeframe]}
ORDER BY (symbol, ts)
{f"TTL {ttl}" if ttl else ""}
"""


LEDGER_DDL = f"""
CREATE TABLE IF NOT EXISTS {LEDGER_TABLE}
(
    symbol LowCardinality(String),
    timeframe LowCardinality(String),
    gap_start DateTime64(0, 'UTC') COMMENT 'first missing bar',
    gap_end DateTime64(0, 'UTC') COMMENT 'first bar after the gap (exclusive)',
    missing_bars UInt64,
    detected_at DateTime64(3, 'UTC'),
    filled_at Nullable(DateTime64(3, 'UTC')),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (symbol, timeframe, gap_start)
"""


def ttl_days_for(ttl_days: Mapping[Timeframe, int] | None, timeframe: Timeframe) -> int:
    return int((ttl_days or {}).get(timeframe, 0))
