"""Resampling one-minute bars to 1h: the lake's engine vs pandas, on the same bars in the same run.

The lake side is `Lake.resample(None, "1h")`: the rollup aggregation (first open, max high, min
low, last close, summed volume and trade count, volume-weighted vwap) run by chdb over the 1m
tier with FINAL, returned as a bar DataFrame. The pandas side groups the same bars, already in
memory as a DataFrame, by symbol and hour with the same aggregations. Both results are checked
equal before timing.

The bars are loaded with `write_bars` in 1M-bar batches and the coarse tiers settled with
`refresh_rollups`; the timed rounds start once the engine's background merges of all that are done
(`OPTIMIZE ... FINAL` on every tier, the state of a lake at rest), so merge work of the load does
not land in either side's timing. The stored 1h tier, which the refresh rolled up, is read too,
for reference.

Target: the lake >= 5x faster than pandas.

    .venv/bin/python benchmarks/bench_lake_resample.py [--bars 10000000] [--symbols 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_data import bar_frame  # benchmarks/ is on sys.path when run as a script

from tradeos_lab.settings import load_settings
from tradeos_lab.stores.lake import TIERS, Lake, bars_table

CHUNK = 1_000_000


def pandas_resample(frame: pd.DataFrame) -> pd.DataFrame:
    """The same 1h bars with pandas: one groupby over (symbol, hour)."""
    work = frame.assign(pv=frame["vwap"] * frame["volume"])
    out = work.groupby(["symbol", pd.Grouper(key="ts", freq="1h")], sort=True).agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
        pv=("pv", "sum"),
        trade_count=("trade_count", "sum"),
    )
    out["vwap"] = out.pop("pv") / out["volume"]
    return out.reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=10_000_000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    frame = bar_frame(args.bars, args.symbols)
    n = len(frame)
    with tempfile.TemporaryDirectory() as tmp, Lake.open(load_settings(data_dir=Path(tmp))) as lake:
        started = time.perf_counter()
        for i in range(0, n, CHUNK):
            lake.write_bars(frame.iloc[i : i + CHUNK])
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        lake.refresh_rollups()
        refreshed = time.perf_counter() - started

        for tf in TIERS:
            lake.command(f"OPTIMIZE TABLE {bars_table(tf)} FINAL")

        ours = lake.resample(None, "1h")
        theirs = pandas_resample(frame)
        assert len(ours) == len(theirs), (len(ours), len(theirs))
        for col in ("open", "high", "low", "close", "volume", "vwap"):
            np.testing.assert_allclose(ours[col], theirs[col], rtol=1e-9, err_msg=col)

        lake_times, pandas_times, stored_times = [], [], []
        pandas_resample(frame)  # untimed warm-up of both sides
        lake.resample(None, "1h")
        for _ in range(args.rounds):
            start = time.perf_counter()
            lake.resample(None, "1h")
            lake_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            pandas_resample(frame)
            pandas_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            for symbol in frame["symbol"].unique():
                lake.read_bars(symbol, "1h")
            stored_times.append(time.perf_counter() - start)

    lake_s, pandas_s = statistics.median(lake_times), statistics.median(pandas_times)
    print(f"bars: {n:,} one-minute bars ({args.symbols} symbols) -> {len(ours):,} 1h bars")
    print(
        f"loaded with write_bars in {loaded:.1f} s ({n / loaded / 1e6:.2f} M/s), coarse tiers "
        f"refreshed in {refreshed:.1f} s"
    )
    print(f"median of {args.rounds} paired rounds:")
    print(f"lake resample (chdb, FINAL):   {lake_s:6.2f} s  ({n / lake_s / 1e6:6.1f} M bars/s)")
    print(f"pandas groupby(symbol, hour):  {pandas_s:6.2f} s  ({n / pandas_s / 1e6:6.1f} M bars/s)")
    print(f"ratio pandas / lake: {pandas_s / lake_s:.1f}x faster in the lake (target >= 5x)")
    stored_s = statistics.median(stored_times)
    print(f"for reference, reading the stored 1h tier: {stored_s:.3f} s")


if __name__ == "__main__":
    main()
