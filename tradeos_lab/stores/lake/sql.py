"""The lake's SQL, shared by every backend. Identifiers come from the tier enum; values are bound.

Aliases inside aggregations are prefixed (`agg_*`) because ClickHouse resolves an alias anywhere
in the query: `sum(volume) AS volume` would turn `vwap * volume` into a nested aggregate.
"""

from __future__ import annotations

UTC64 = "DateTime64(6, 'UTC')"

# One bar of the coarser tier from the bars of the finer one: first open, max high, min low,
# last close, summed volume, and vwap weighted by the volume behind each bar's vwap (bars
# without one weigh nothing), which keeps 1m -> 5m -> 15m -> 1h -> 1d equal to 1m -> 1d.
AGGREGATE = """
SELECT
    symbol,
    toDateTime64(toStartOfInterval(ts, toIntervalSecond({{step:UInt32}})), 0, 'UTC') AS agg_ts,
    argMin(open, ts) AS agg_open,
    max(high) AS agg_high,
    min(low) AS agg_low,
    argMax(close, ts) AS agg_close,
    sum(volume) AS agg_volume,
    sumIf(vwap * vwap_volume, vwap_volume > 0) / sum(vwap_volume) AS agg_vwap,
    sum(vwap_volume) AS agg_vwap_volume,
    sum(trade_count) AS agg_trade_count
FROM {source} FINAL
WHERE {where}
GROUP BY symbol, agg_ts
"""

# Buckets touched by a write, per symbol: bounds as epoch seconds, looked up with transform().
ROLLUP_WHERE = f"""
symbol IN {{symbols:Array(String)}}
AND ts >= {{lo:{UTC64}}} AND ts < {{hi:{UTC64}}}
AND toUnixTimestamp(ts)
    >= transform(toString(symbol), {{symbols:Array(String)}}, {{los:Array(UInt32)}}, 0)
AND toUnixTimestamp(ts)
    < transform(toString(symbol), {{symbols:Array(String)}}, {{his:Array(UInt32)}}, 0)
"""

ROLLUP_WHERE_SHARED = f"""
symbol IN {{symbols:Array(String)}}
AND ts >= {{lo:{UTC64}}} AND ts < {{hi:{UTC64}}}
"""

# GROUP BY already made the rows unique by key: skip the on-insert deduplication pass.
ROLLUP_INSERT = """
INSERT INTO {target}
    (symbol, ts, open, high, low, close, volume, vwap, vwap_volume, trade_count, version)
SETTINGS optimize_on_insert = 0
SELECT symbol, agg_ts, agg_open, agg_high, agg_low, agg_close, agg_volume, agg_vwap,
       agg_vwap_volume, agg_trade_count, {{version:UInt64}}
FROM ({aggregate})
"""

PENDING = """
SELECT toString(symbol) AS symbol, toString(timeframe) AS timeframe, lo, hi, version
FROM rollup_pending FINAL
WHERE done = 0
"""

# Rows arrive sorted by (symbol, ts), so the engine can aggregate a symbol's buckets as a stream
# instead of through one hash table of every (symbol, bucket): 0.68 s -> 0.47 s over 10M bars here.
# (The rollups, bounded per symbol and smaller, measured slower this way and keep the hash table.)
RESAMPLE = """
SELECT symbol, agg_ts AS ts, agg_open AS open, agg_high AS high, agg_low AS low,
       agg_close AS close, agg_volume AS volume, agg_vwap AS vwap,
       agg_trade_count AS trade_count
FROM ({aggregate})
ORDER BY symbol, ts
SETTINGS optimize_aggregation_in_order = 1
"""

READ_BARS = f"""
SELECT symbol, ts, open, high, low, close, volume, vwap, trade_count
FROM {{table}} FINAL
WHERE symbol = {{{{symbol:String}}}} AND ts >= {{{{start:{UTC64}}}}} AND ts < {{{{end:{UTC64}}}}}
ORDER BY ts {{order}}
{{limit}}
"""

COVERAGE_PART = """
SELECT toString(symbol) AS symbol, {{tf_{i}:String}} AS timeframe, min(ts) AS earliest,
       max(ts) AS latest, count() AS bars
FROM {table} FINAL
{where}
GROUP BY symbol
"""

# Missing grid points of one symbol in [first, stop): each present bar (and the sentinel `stop`)
# closes the run of missing points that started one step after the previous present bar.
GAPS = f"""
SELECT toDateTime64(gap_s, 0, 'UTC') AS gap_start,
       toDateTime64(gap_e, 0, 'UTC') AS gap_end,
       toUInt64(intDiv(gap_e - gap_s, {{{{step:Int64}}}})) AS missing_bars
FROM (
    SELECT lagInFrame(t, 1, {{{{first:Int64}}}} - {{{{step:Int64}}}})
               OVER (ORDER BY t ASC ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
               + {{{{step:Int64}}}} AS gap_s,
           t AS gap_e
    FROM (
        SELECT DISTINCT toInt64(toUnixTimestamp(ts)) AS t
        FROM {{table}}
        WHERE symbol = {{{{symbol:String}}}}
          AND ts >= {{{{start:{UTC64}}}}} AND ts < {{{{end:{UTC64}}}}}
        UNION ALL
        SELECT {{{{stop:Int64}}}}
    )
)
WHERE gap_e > gap_s
ORDER BY gap_start
"""

PRESENT_IN_RANGE = f"""
SELECT count(DISTINCT ts) AS present
FROM {{table}}
WHERE symbol = {{{{symbol:String}}}} AND ts >= {{{{start:{UTC64}}}}} AND ts < {{{{end:{UTC64}}}}}
"""

OPEN_GAPS = f"""
SELECT toString(symbol) AS symbol, toString(timeframe) AS timeframe, gap_start, gap_end,
       missing_bars, detected_at
FROM gap_ledger FINAL
WHERE filled_at IS NULL
  AND symbol IN {{symbols:Array(String)}} AND timeframe IN {{timeframes:Array(String)}}
  AND gap_start < {{hi:{UTC64}}} AND gap_end > {{lo:{UTC64}}}
"""

LEDGER = """
SELECT toString(symbol) AS symbol, toString(timeframe) AS timeframe, gap_start, gap_end,
       missing_bars, detected_at, filled_at
FROM gap_ledger FINAL
WHERE {where}
ORDER BY symbol, timeframe, gap_start
"""

# The bars features are computed over: [start, end) plus `warmup` bars before start, so rolling
# windows are full at the first returned row.
FEATURE_SOURCE = f"""
SELECT ts, open, high, low, close, volume FROM {{table}} FINAL
WHERE symbol = {{{{symbol:String}}}} AND ts >= {{{{start:{UTC64}}}}} AND ts < {{{{end:{UTC64}}}}}
UNION ALL
SELECT ts, open, high, low, close, volume FROM (
    SELECT ts, open, high, low, close, volume FROM {{table}} FINAL
    WHERE symbol = {{{{symbol:String}}}} AND ts < {{{{start:{UTC64}}}}}
    ORDER BY ts DESC
    LIMIT {{{{warmup:UInt64}}}}
)
"""

# True range, its simple moving average over `window` bars (the ATR), and the ATR's mid-rank
# percentile among the last `lookback` ATRs: (below + half of equal) / lookback. Classified low
# at or below `low`, high at or above `high`, normal between; NULL until the windows are full.
ATR_REGIME = f"""
SELECT {{{{symbol:String}}}} AS symbol, ts, tr, atr, atr_pct,
       multiIf(isNaN(atr_pct), NULL, atr_pct <= {{{{low:Float64}}}}, 'low',
               atr_pct >= {{{{high:Float64}}}}, 'high', 'normal') AS regime
FROM (
    SELECT ts, tr, atr,
           groupArray(atr) OVER (ORDER BY ts ROWS BETWEEN {{{{lookback_1:UInt32}}}} PRECEDING
                                 AND CURRENT ROW) AS atr_hist,
           if(length(atr_hist) = {{{{lookback:UInt32}}}} AND arrayAll(x -> NOT isNaN(x), atr_hist),
              (arrayCount(x -> x < atr, atr_hist) + 0.5 * arrayCount(x -> x = atr, atr_hist))
                  / length(atr_hist),
              nan) AS atr_pct
    FROM (
        SELECT ts, tr,
               if(count() OVER atr_w = {{{{window:UInt32}}}}, avg(tr) OVER atr_w, nan) AS atr
        FROM (
            SELECT ts, greatest(high - low, abs(high - prev_close), abs(low - prev_close)) AS tr
            FROM (
                SELECT ts, high, low, close,
                       lagInFrame(close, 1, close)
                           OVER (ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS prev_close
                FROM ({{source}})
            )
        )
        WINDOW atr_w AS (ORDER BY ts ROWS BETWEEN {{{{window_1:UInt32}}}} PRECEDING AND CURRENT ROW)
    )
)
WHERE ts >= {{{{start:{UTC64}}}}}
ORDER BY ts
"""

# Mid-rank percentile of each bar's volume among the last `lookback` bars (itself included).
VOLUME_PERCENTILE = f"""
SELECT {{{{symbol:String}}}} AS symbol, ts, volume, volume_pct
FROM (
    SELECT ts, volume,
           groupArray(volume) OVER (ORDER BY ts ROWS BETWEEN {{{{lookback_1:UInt32}}}} PRECEDING
                                    AND CURRENT ROW) AS vol_hist,
           if(length(vol_hist) = {{{{lookback:UInt32}}}},
              (arrayCount(x -> x < volume, vol_hist) + 0.5 * arrayCount(x -> x = volume, vol_hist))
                  / length(vol_hist),
              nan) AS volume_pct
    FROM ({{source}})
)
WHERE ts >= {{{{start:{UTC64}}}}}
ORDER BY ts
"""

# Opening range = high/low of the bars in [open, open + range) of each local session day; the
# breakout is the first later bar (before the session close) closing above or below it.
OPENING_RANGE_BREAKOUT = f"""
SELECT {{{{symbol:String}}}} AS symbol, session, range_bars, or_high, or_low,
       if(hits = 0, NULL, hit_dir) AS breakout,
       if(hits = 0, NULL, hit_ts) AS breakout_ts,
       if(hits = 0, NULL, hit_close) AS breakout_close
FROM (
    SELECT session,
           any(orb_bars) AS range_bars,
           any(orb_high) AS or_high,
           any(orb_low) AS or_low,
           countIf(after AND (close > orb_high OR close < orb_low)) AS hits,
           argMinIf(if(close > orb_high, 'up', 'down'), ts,
                    after AND (close > orb_high OR close < orb_low)) AS hit_dir,
           minIf(ts, after AND (close > orb_high OR close < orb_low)) AS hit_ts,
           argMinIf(close, ts, after AND (close > orb_high OR close < orb_low)) AS hit_close
    FROM (
        SELECT session, ts, close, after,
               max(if(in_range, high, -inf)) OVER (PARTITION BY session) AS orb_high,
               min(if(in_range, low, inf)) OVER (PARTITION BY session) AS orb_low,
               countIf(in_range) OVER (PARTITION BY session) AS orb_bars
        FROM (
            SELECT ts, high, low, close,
                   toDate(toTimeZone(ts, {{{{tz:String}}}})) AS session,
                   toHour(toTimeZone(ts, {{{{tz:String}}}})) * 60
                       + toMinute(toTimeZone(ts, {{{{tz:String}}}})) AS minute_of_day,
                   minute_of_day >= {{{{open_min:UInt32}}}}
                       AND minute_of_day < {{{{range_end_min:UInt32}}}} AS in_range,
                   minute_of_day >= {{{{range_end_min:UInt32}}}} AS after
            FROM {{table}} FINAL
            WHERE symbol = {{{{symbol:String}}}}
              AND ts >= {{{{start:{UTC64}}}}} AND ts < {{{{end:{UTC64}}}}}
              AND minute_of_day >= {{{{open_min:UInt32}}}}
              AND minute_of_day < {{{{close_min:UInt32}}}}
        )
    )
    GROUP BY session
    HAVING range_bars > 0
)
ORDER BY session
"""
