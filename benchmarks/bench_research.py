"""Research backtests and sweeps next to raw vectorbt on the same signals, in the same run.

    python benchmarks/bench_research.py [--bars 100000] [--separate 20] [--no-dask]

On `--bars` seeded one-minute bars of one symbol (a random walk), after a warm-up run of each
path (numba compiles once per process):

1. wrapper: `backtest(SmaCross(10, 50), bars)` (bars validated, signals by the strategy's batch
   form, the simulation, metrics, equity curve; no records store, so no run is recorded, as raw
   records none) against a raw `vbt.Portfolio.from_signals` on the same signals with the same
   costs; the two calls alternate, median of 7 each (a shared machine's load drifts between
   two blocks of calls). Target: <= 1.5x. The wrapper's vectorbt portfolio object is built on
   first use of `result.portfolio` (from the same order records), not in this call.
2. sweep: `sweep(SmaCross, bars, fast=40 values, slow=25 values)`, 1,000 combinations, against
   raw vectorbt on the same broadcast signals (one `from_signals` over the 1,000 columns, then
   `total_return()`, the signals computed beforehand and not timed). Target: >= 70 % of raw's
   combinations per second, and <= 25 % of the time of 1,000 separate warm backtests (timed on
   `--separate` of them, each run once before, and scaled to 1,000). The sweep and the batch of
   separate backtests alternate after a warm-up run of each, median of 3 each.
3. dask: the same sweep with `workers=2` (a LocalCluster, its start included) against the
   single process: the ratio (near 1 on 2 cores; the point is that it runs unchanged).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import vectorbt as vbt

from tradeos_lab.research import BacktestProfile, backtest, vectorbt_engine
from tradeos_lab.research.sweep import sweep
from tradeos_lab.strategies import SmaCross

FAST = list(range(2, 42))  # 40 values
SLOW = list(range(50, 75))  # 25 values: 1,000 combinations, all with fast < slow
PROFILE = BacktestProfile()


def random_walk(n: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0, 5e-4, n)) * close
    return pd.DataFrame(
        {
            "symbol": "BENCH",
            "timeframe": "1m",
            "ts": pd.date_range("2020-01-01", periods=n, freq="1min", tz="UTC"),
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.gamma(2.0, 50.0, n),
        }
    )


def timed(call: Callable[[], Any], repeat: int = 1) -> float:
    """Median wall seconds of `repeat` calls after one warm-up call."""
    call()
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_pair(
    ours: Callable[[], Any], theirs: Callable[[], Any], repeat: int = 7
) -> tuple[float, float]:
    """Median wall seconds of `ours` and of `theirs`, called in turn `repeat` times each after
    one warm-up call of each."""
    ours()
    theirs()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for call, kept in ((ours, times[0]), (theirs, times[1])):
            gc.collect()
            start = time.perf_counter()
            call()
            kept.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def raw_arguments(bars: pd.DataFrame, strategies: list[SmaCross]) -> dict[str, Any]:
    """close and the four masks of `strategies` side by side (one column each), plus costs."""
    frames = [s.signals(bars) for s in strategies]
    index = pd.DatetimeIndex(frames[0]["ts"]).tz_convert(None)
    masks = {
        name: np.column_stack([f[name].to_numpy() for f in frames])
        for name in ("entries", "exits", "short_entries", "short_exits")
    }
    close = pd.DataFrame(
        np.tile(bars["close"].to_numpy()[:, None], (1, len(strategies))), index=index
    )
    return {
        "close": close,
        **{k: pd.DataFrame(v, index=index) for k, v in masks.items()},
        **PROFILE.portfolio_arguments(),
        "freq": "1min",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--separate", type=int, default=20)
    parser.add_argument("--no-dask", action="store_true")
    args = parser.parse_args()
    bars = random_walk(args.bars)
    grid = {"fast": FAST, "slow": SLOW}
    combos = len(FAST) * len(SLOW)
    print(f"{args.bars:,} bars, vectorbt {vbt.__version__} on {vectorbt_engine()}")

    strategy = SmaCross(fast=10, slow=50)
    raw_one = raw_arguments(bars, [strategy])
    ours, raw = timed_pair(
        lambda: backtest(strategy, bars, profile=PROFILE),
        lambda: vbt.Portfolio.from_signals(**raw_one),
    )
    print(
        f"1. wrapper  backtest() {ours * 1e3:8.1f} ms | raw from_signals {raw * 1e3:8.1f} ms | "
        f"ratio {ours / raw:.2f}x (target <= 1.5x)"
    )

    raw_all = raw_arguments(bars, [SmaCross(fast=f, slow=s) for f in FAST for s in SLOW])
    raw_sweep = timed(lambda: vbt.Portfolio.from_signals(**raw_all).total_return())
    raw_all.clear()
    gc.collect()
    separate_ones = [SmaCross(fast=f, slow=s) for f, s in zip(FAST, SLOW * 2, strict=False)]
    separate_ones = separate_ones[: args.separate]
    swept = sweep(SmaCross, bars, profile=PROFILE, **grid)
    assert len(swept.table) == combos
    # The sweep and the separate backtests alternate, as the wrapper and raw vectorbt do: the
    # two sides of the ratio sampled once each, moments apart, would count a burst of load on a
    # shared machine as a difference in speed.
    ours_sweep, separate_ones_time = timed_pair(
        lambda: sweep(SmaCross, bars, profile=PROFILE, **grid),
        lambda: [backtest(one, bars, profile=PROFILE) for one in separate_ones],
        repeat=3,
    )
    separate = separate_ones_time / len(separate_ones) * combos
    print(
        f"2. sweep    {combos:,} combinations: sweep() {ours_sweep:7.1f} s "
        f"({combos / ours_sweep:7.1f}/s) | raw vectorbt {raw_sweep:7.1f} s "
        f"({combos / raw_sweep:7.1f}/s) | {combos:,} separate backtests {separate:7.1f} s "
        f"(from {len(separate_ones)})"
    )
    print(
        f"           combos/s vs raw {raw_sweep / ours_sweep:.0%} (target >= 70%); "
        f"time vs separate {ours_sweep / separate:.0%} (target <= 25%)"
    )

    if not args.no_dask:
        start = time.perf_counter()
        on_dask = sweep(SmaCross, bars, profile=PROFILE, workers=2, **grid)
        dask_time = time.perf_counter() - start
        same = on_dask.table.equals(swept.table)
        print(
            f"3. dask     2 workers {dask_time:7.1f} s (cluster start included) | single "
            f"process {ours_sweep:7.1f} s | ratio {dask_time / ours_sweep:.2f}x | "
            f"identical results: {same}"
        )


if __name__ == "__main__":
    main()
