"""Live strategy evaluation per bar, next to the batch evaluation of the same bars per bar.

    python benchmarks/bench_strategies.py [--bars 20000] [--live 5000]

For every built-in strategy, on `--bars` seeded synthetic one-minute bars:

- batch: `strategy.signals(bars)` (indicators over the whole history + the rule over whole
  arrays + the vectorbt masks), its time divided by the number of bars;
- live: `LiveStrategy.update(bar)` on each of the last `--live` bars (as `Bar` payloads, the form
  the Signal Engine receives them in) after the earlier ones warmed it up: every incremental
  indicator, the rule on the lookback window, and the `RawSignal` when the rule gives one.
  Median and p99 per bar;
- of that, the indicator states alone (`IndicatorSetState.update`), measured the same way.

Prints a table with the ratio of live median to batch per bar: what one bar costs the Signal
Engine compared with recomputing it as part of a backtest.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from tradeos_lab.contracts import Bar, new_message_id
from tradeos_lab.providers import SyntheticProvider
from tradeos_lab.strategies import (
    MacdTrend,
    OpeningRangeBreakout,
    RsiReversion,
    SmaCross,
    Strategy,
)

BAR_KEYS = ("ts", "open", "high", "low", "close", "volume")


def per_call_us(call: Callable[[Any], object], bars: list[Any]) -> np.ndarray:
    """Microseconds of each `call(bar)`, in order."""
    out = np.empty(len(bars))
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i, bar in enumerate(bars):
            t0 = clock()
            call(bar)
            out[i] = (clock() - t0) / 1000
    finally:
        gc.enable()
    return out


def measure(strategy: Strategy[Any], bars: pd.DataFrame, live_bars: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    signals = strategy.signals(bars)
    batch_us = (time.perf_counter() - t0) * 1e6 / len(bars)

    symbol, timeframe = bars["symbol"].iloc[0], bars["timeframe"].iloc[0]
    records = bars[list(BAR_KEYS)].to_dict("records")
    payloads = [Bar(symbol=symbol, timeframe=timeframe, source="synthetic", **r) for r in records]
    warm, timed = payloads[:-live_bars], payloads[-live_bars:]
    live = strategy.live(symbol, timeframe)
    message_id = new_message_id()
    for bar in warm:
        live.update(bar, source_message_id=message_id)
    live_us = per_call_us(lambda b: live.update(b, source_message_id=message_id), timed)

    states = strategy.indicator_set.state()
    for record in records[:-live_bars]:
        states.update(record)
    state_us = per_call_us(states.update, records[-live_bars:])
    return {
        "strategy": strategy.name,
        "signals": int(signals["strength"].notna().sum()),
        "batch us/bar": batch_us,
        "live p50 us": float(np.median(live_us)),
        "live p99 us": float(np.percentile(live_us, 99)),
        "indicators p50 us": float(np.median(state_us)),
        "live / batch": float(np.median(live_us)) / batch_us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=20_000)
    parser.add_argument("--live", type=int, default=5_000)
    args = parser.parse_args()
    start = pd.Timestamp("2025-06-02", tz="UTC")
    bars = SyntheticProvider(seed=3).fetch_bars(
        "BENCH", "1m", start, start + pd.Timedelta(minutes=args.bars)
    )
    strategies: list[Strategy[Any]] = [
        SmaCross(),
        RsiReversion(),
        MacdTrend(),
        OpeningRangeBreakout(calendar="XNYS"),
    ]
    for strategy in strategies:  # first use compiles kernels and loads calendars
        measure(strategy, bars.iloc[:2000], 500)
    rows = [measure(s, bars, min(args.live, len(bars) - 1000)) for s in strategies]
    table = pd.DataFrame(rows).set_index("strategy")
    print(f"{len(bars)} one-minute bars; live timed on the last {min(args.live, len(bars) - 1000)}")
    print(table.to_string(float_format=lambda v: f"{v:,.2f}"))


if __name__ == "__main__":
    main()
