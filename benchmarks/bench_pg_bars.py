"""PostgresBarStore.write_bars against a raw COPY of the same rows, in the same run.

Target: the store's insert reaches >= 70% of the rate of a plain COPY.

    .venv/bin/python benchmarks/bench_pg_bars.py --rows 200000

A scratch database is created on the server of TRADEOS_TEST_PG_URL (default
postgresql://postgres@127.0.0.1:5432/postgres) and dropped at the end. Each round truncates both
tables, then times:
- the store: `write_bars(frame)` from the DataFrame, validation included, into the partitioned
  `market_data_bars`, committed;
- the peer: psycopg's binary `COPY ... FROM STDIN` with `write_row` into a plain table created
  `LIKE market_data_bars INCLUDING ALL` (same columns, primary key and types), committed. Its rows
  are built as Python tuples before the clock starts, which favours the peer.
Rounds are paired (both sides back to back, alternating which goes first) and the median of the
per-round ratios is the figure, as the machine may be shared. Also reported: the same fresh rows
forced through the merge path (staging COPY + UPDATE + INSERT ... SELECT ... ON CONFLICT), which
the store takes only when a batch overlaps stored bars, and a rewrite of the stored batch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from sqlalchemy import create_engine

from tradeos_lab.stores.bars_pg import PostgresBarStore

ADMIN_URL = os.environ.get("TRADEOS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TARGET = 0.70
COLUMNS = 'symbol, timeframe, "timestamp", open, high, low, close, volume, vwap, trade_count'
TYPES = ["varchar", "varchar", "timestamptz", *["float8"] * 6, "int4"]


def make_bars(rows: int, symbols: int, seed: int = 7) -> pd.DataFrame:
    """One-minute bars of `symbols` tickers, a random walk with realistic OHLC relations."""
    rng = np.random.default_rng(seed)
    per = rows // symbols
    ts = pd.date_range("2024-01-01", periods=per, freq="1min", tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 5e-4, per * symbols)))
    open_ = close * np.exp(rng.normal(0, 2e-4, close.size))
    spread = np.abs(rng.normal(0, 5e-4, close.size)) * close
    return pd.DataFrame(
        {
            "symbol": np.repeat([f"SYM{i:03d}" for i in range(symbols)], per),
            "timeframe": "1m",
            "ts": np.tile(ts, symbols),
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.gamma(2.0, 500.0, close.size).round(4),
            "vwap": (open_ + close) / 2,
            "trade_count": rng.integers(1, 500, close.size),
        }
    )


class MergeOnly(PostgresBarStore):
    """The store with its conflict-free fast path disabled: every batch is merged."""

    def _overlaps(self, pg: Any, keys: pd.DataFrame) -> bool:
        return True


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    frame = make_bars(args.rows, args.symbols)
    n = len(frame)
    tuples = [
        (s, tf, ts.to_pydatetime(), o, h, lo, c, v, vw, int(tc))
        for s, tf, ts, o, h, lo, c, v, vw, tc in frame.itertuples(index=False, name=None)
    ]
    name = f"tradeos_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(url))
    try:
        store = PostgresBarStore(engine)
        merge_only = MergeOnly(engine, create_schema=False)
        with psycopg.connect(url) as pg:
            pg.execute("CREATE TABLE bench_copy (LIKE market_data_bars INCLUDING ALL)")
            pg.commit()

            def reset() -> None:
                pg.execute("TRUNCATE market_data_bars, symbol_metadata, bench_copy")
                pg.commit()
                pg.execute("CHECKPOINT")  # each round starts without the last round's dirty pages

            def raw_copy() -> None:
                with (
                    pg.cursor() as cur,
                    cur.copy(f"COPY bench_copy ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy,
                ):
                    copy.set_types(TYPES)
                    for row in tuples:
                        copy.write_row(row)
                pg.commit()

            def count() -> int:
                row = pg.execute("SELECT count(*) FROM market_data_bars").fetchone()
                pg.commit()
                return int(row[0]) if row else 0

            def ours_once() -> float:
                reset()
                return timed(lambda: store.write_bars(frame))

            def peer_once() -> float:
                reset()
                return timed(raw_copy)

            store.write_bars(frame)  # warm-up: creates the month partitions, loads code paths
            peer_once()
            ours, peer, merged, rewrite = [], [], [], []
            for i in range(args.rounds):
                # Pairs run back to back, alternating which goes first, so that load from other
                # processes on the machine hits both sides alike.
                if i % 2:
                    ours.append(ours_once())
                    peer.append(peer_once())
                else:
                    peer.append(peer_once())
                    ours.append(ours_once())
                rewrite.append(timed(lambda: store.write_bars(frame)))
                assert count() == n, "a rewrite must not duplicate bars"
                reset()
                merged.append(timed(lambda: merge_only.write_bars(frame)))
                assert count() == n
    finally:
        engine.dispose()
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def rate(seconds: float) -> str:
        return f"{n / seconds:>12,.0f} bars/s  ({seconds * 1000:7.1f} ms)"

    ratios = [p / o for p, o in zip(peer, ours, strict=True)]
    ratio = statistics.median(ratios)
    merge_ratio = statistics.median(p / m for p, m in zip(peer, merged, strict=True))
    print(f"rows: {n:,} ({args.symbols} symbols, 1m); {args.rounds} rounds, median shown")
    print(f"raw COPY (binary, write_row)       {rate(statistics.median(peer))}")
    print(f"PostgresBarStore.write_bars        {rate(statistics.median(ours))}")
    merge_rate = rate(statistics.median(merged))
    print(f"  same rows, staging + ON CONFLICT {merge_rate}  ratio {merge_ratio:.2f}")
    print(f"  rewrite of the stored bars       {rate(statistics.median(rewrite))}  (no duplicates)")
    print(f"per-round ratios write_bars / COPY: {' '.join(f'{r:.2f}' for r in ratios)}")
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(f"median ratio write_bars / COPY = {ratio:.2f} (target >= {TARGET:.2f}): {verdict}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
