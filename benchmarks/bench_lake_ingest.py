"""Lake ingest: `Lake.write_bars` of a DataFrame vs chdb's `INSERT ... SELECT * FROM Python(df)`.

Both load the same bar frame into the same chdb session, in the same run, alternating rounds on
emptied tables. The peer is chdb's fastest documented DataFrame path into a table shaped like the
frame (same engine, partitioning and order key as the lake's 1m tier). `write_bars` does more:
it validates the frame, writes the 1m tier and queues the written span for the rollups.

The coarse tiers (5m/15m/1h/1d) are recomputed by `refresh_rollups`, which the first read of a
coarse tier (or the stack owner, every few seconds) runs. It is timed too, right after each
write, and reported as "ingest + refresh": the whole cost of making every tier current.

Targets: write_bars >= 70% of the peer's rate, and >= 1M bars/s.

    .venv/bin/python benchmarks/bench_lake_ingest.py [--bars 1000000] [--symbols 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench_data import bar_frame  # benchmarks/ is on sys.path when run as a script

from tradeos_lab.bars import validate_bars
from tradeos_lab.settings import load_settings
from tradeos_lab.stores.lake import TIERS, Lake, bars_table
from tradeos_lab.stores.lake.chdb_backend import ChdbBackend

PEER_DDL = """
CREATE TABLE IF NOT EXISTS peer_bars
(
    symbol String, timeframe String, ts DateTime64(9, 'UTC'),
    open Float64, high Float64, low Float64, close Float64, volume Float64, vwap Float64,
    trade_count Nullable(Int64)
)
ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(ts) ORDER BY (symbol, ts)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    df = bar_frame(args.bars, args.symbols)
    n = len(df)
    with tempfile.TemporaryDirectory() as tmp, Lake.open(load_settings(data_dir=Path(tmp))) as lake:
        backend = lake.backend
        assert isinstance(backend, ChdbBackend)
        session = backend.session
        session.query(PEER_DDL)

        def empty_all() -> None:
            for table in [bars_table(tf) for tf in TIERS] + ["gap_ledger", "peer_bars"]:
                session.query(f"TRUNCATE TABLE {table}")

        def peer() -> float:
            start = time.perf_counter()
            session.query("INSERT INTO peer_bars SELECT * FROM Python(df)")
            return time.perf_counter() - start

        def ours() -> float:
            start = time.perf_counter()
            lake.write_bars(df)
            return time.perf_counter() - start

        def refresh() -> float:
            start = time.perf_counter()
            settled = lake.refresh_rollups()
            assert settled == args.symbols, settled  # one span per symbol, all settled
            return time.perf_counter() - start

        def gate() -> float:
            start = time.perf_counter()
            validate_bars(df)
            return time.perf_counter() - start

        # One untimed round of each warms caches and the engine.
        empty_all()
        peer()
        ours()
        refresh()
        peer_times, our_times, gate_times, refresh_times = [], [], [], []
        for i in range(args.rounds):
            # Alternate who goes first, so neither always meets the other's leftover merges.
            for side in ("peer", "ours") if i % 2 == 0 else ("ours", "peer"):
                empty_all()
                if side == "peer":
                    peer_times.append(peer())
                else:
                    our_times.append(ours())
                    refresh_times.append(refresh())
            gate_times.append(gate())

        empty_all()
        lake.write_bars(df)
        stored = lake.coverage().set_index("timeframe")["bars"].groupby(level=0).sum()
        assert stored["1m"] == n, stored

    peer_s, ours_s = statistics.median(peer_times), statistics.median(our_times)
    gate_s, refresh_s = statistics.median(gate_times), statistics.median(refresh_times)
    full_s = statistics.median(w + r for w, r in zip(our_times, refresh_times, strict=True))
    print(f"bars: {n:,} ({args.symbols} symbols), median of {args.rounds} paired rounds")
    print(f"chdb INSERT ... SELECT * FROM Python(df):  {n / peer_s / 1e6:6.2f} M bars/s")
    print(f"Lake.write_bars (validate + 1m + queue):   {n / ours_s / 1e6:6.2f} M bars/s")
    print(f"  + refresh_rollups (5m/15m/1h/1d):        {n / full_s / 1e6:6.2f} M bars/s")
    ratio = peer_s / ours_s
    verdict = "PASS" if ratio >= 0.70 and n / ours_s >= 1e6 else "FAIL"
    print(f"ratio write_bars / chdb: {ratio:.2f} (target >= 0.70; >= 1.0 M bars/s) -> {verdict}")
    print(f"ratio ingest + refresh / chdb: {peer_s / full_s:.2f}")
    print(
        f"write_bars {ours_s:.3f} s = validate_bars {gate_s:.3f} s + 1m insert and queue "
        f"{ours_s - gate_s:.3f} s; refresh_rollups {refresh_s:.3f} s; chdb alone {peer_s:.3f} s"
    )
    print("bars per tier: " + ", ".join(f"{tf}={stored[tf]:,}" for tf in stored.index))


if __name__ == "__main__":
    main()
