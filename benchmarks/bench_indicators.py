"""Indicator speed, batch and incremental, against peers measured in the same run.

    python benchmarks/bench_indicators.py [--bars 1000000] [--live-bars 20000]

Batch: each spec's `batch(bars)` over one symbol's bar frame of `--bars` one-minute bars
(validation and the result frame included), next to the raw TA-Lib call on the same arrays
(where TA-Lib has the indicator) and the equivalent pandas `rolling`/`ewm`/`groupby` code.
Targets: >= 50% of TA-Lib's throughput (ratio TA-Lib time / ours >= 0.5) and >= 5x pandas. The
last column is TA-Lib's own speed-up over pandas: the ceiling for an indicator computed by
TA-Lib (for EMA it is below 5x: pandas' `ewm` is compiled too, so EMA is a numba kernel that
runs TA-Lib's recurrence four bars per dependent step). All three are timed interleaved with the
same repeats, best of each, each timed call right after an untimed one of the same code, in an
order that rotates with each repeat (the first passes over the bars after the pandas code, which
sweeps them out of the caches, run at memory speed: in a fixed order the same call would always
pay for that). The pandas peers are the idiom a quant would write: RSI with each Wilder mean
computed once, `ewm(span=n, adjust=False)` for EMA/MACD, `rolling(w).rank(pct=True)` for the
percentiles, and a groupby-cumsum over the UTC day (the day key computed inside the timing, as
ours finds each bar's session from `ts`) for session VWAP.

Last figures, 1M bars, the defaults (`--repeat 21`), three runs in a row on a 2-core machine
shared with other jobs (load average 4-7): the range over the runs.

| indicator | ours ms | TA-Lib ms | TA-Lib/ours | pandas ms | x pandas |
|---|---|---|---|---|---|
| rsi_14 | 3.7-4.2 | 2.5-2.7 | 0.62-0.68 | 40.4-47 | 10.8-11.4 |
| rsi_9 | 3.7-4.1 | 2.5-2.7 | 0.63-0.69 | 38.2-48.9 | 10.5-12.3 |
| sma_10 | 1.2-1.4 | 1-1.1 | 0.78-0.92 | 8.3-20.6 | 7.1-14.6 |
| sma_20 | 1.2-1.7 | 1-1.1 | 0.61-0.89 | 8.3-19.1 | 7.2-11 |
| sma_50 | 1.1-1.6 | 1-1.1 | 0.64-0.91 | 8.4-19.4 | 7.5-12 |
| sma_200 | 1.1-1.6 | 1-1.1 | 0.66-0.90 | 8.3-14.9 | 7.3-10.1 |
| ema_10 | 1.4-1.6 | 1.7-1.8 | 1.12-1.26 | 7.3-10.2 | 5.2-6.2 |
| ema_20 | 1.3-1.5 | 1.8 | 1.19-1.39 | 7.1-8.1 | 5.4-5.6 |
| ema_50 | 1.2-1.6 | 1.8 | 1.12-1.46 | 7-10.3 | 5.8-6.4 |
| macd_12_26_9 | 3.4-4.3 | 2.1-2.2 | 0.50-0.61 | 24.8-35.1 | 7.2-8.1 |
| bb_20_2 | 5.4-6.6 | 3.8-4.1 | 0.61-0.72 | 31.8-39.5 | 5.9-6 |
| atr_14 | 2-2.3 | 1.1-1.3 | 0.48-0.59 | 22.8-54.7 | 11.2-23.4 |
| atr_regime_14_100 | 23-24.3 | - | - | 264.1-289.7 | 11.5-12 |
| volume_pct_100 | 18.7-20 | - | - | 238.6-254.3 | 12.7 |
| vwap_24_7 | 2.5-3.2 | - | - | 40.1-47.5 | 14.8-15.7 |
| or_30_24_7 | 2.8-4.2 | - | - | 48.8-58.9 | 13.9-17.6 |

Every target met in two of the three runs; the first missed `atr_14` at 0.48. The thin ones: ATR
(its kernel runs at TA-Lib's speed, ~1.1 ms, but the bar-frame path adds the time-order check,
0.27 ms for 8 MB of times, and ~0.3 ms of reading the frame's columns and building the result)
and EMA against pandas (pandas' `ewm` is compiled: ~7 ms; ours is ~1.1 ms unloaded, of which 0.6
ms is the kernel, at the speed of copying the prices, and 0.27 ms the time-order check). Three
runs just before, under load average 6-9, gave EMA 4.8-7.6x pandas (one EMA below 5x in two of
them) and ATR 0.50-0.54; at load 9-13 any of the thin ratios, and RSI or MACD, can miss.

Incremental: the median time of `state.update(bar)` per bar (bars as dicts; timed in chunks of
100 bars, median over the chunks), target <= 5 us per bar per indicator, printed beside a full
batch recomputation of the last 500 bars (what a live engine without states would pay per bar).
The `set` row is one `IndicatorSetState` of every spec: one bar read, per indicator.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import talib

from tradeos_lab.indicators import (
    ATR,
    EMA,
    MACD,
    RSI,
    SMA,
    ATRRegime,
    BBands,
    Indicator,
    IndicatorSet,
    OpeningRange,
    SessionVWAP,
    VolumePercentile,
)

TALIB_RATIO = 0.5
PANDAS_SPEEDUP = 5.0
LIVE_US = 5.0


def make_bars(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    return pd.DataFrame(
        {
            "ts": pd.date_range("2015-01-02", periods=n, freq="1min", tz="UTC"),
            "open": open_,
            "high": np.maximum(open_, close) * (1 + rng.uniform(0, 0.001, n)),
            "low": np.minimum(open_, close) * (1 - rng.uniform(0, 0.001, n)),
            "close": close,
            "volume": rng.integers(1, 10_000, n).astype(float),
        }
    )


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# ---- peers -----------------------------------------------------------------------------------


def pandas_peer(  # noqa: PLR0911 (one return per indicator: a flat dispatch reads best)
    spec: Indicator, bars: pd.DataFrame
) -> Callable[[], Any]:
    """The same indicator written the usual pandas way."""
    c, h, lo, v = bars["close"], bars["high"], bars["low"], bars["volume"]

    def true_range() -> pd.Series:
        prev = c.shift()
        return pd.concat([h - lo, (h - prev).abs(), (lo - prev).abs()], axis=1).max(axis=1)

    def wilder(x: pd.Series, p: int) -> pd.Series:
        return x.ewm(alpha=1 / p, adjust=False).mean()

    if isinstance(spec, RSI):

        def rsi() -> Any:
            d = c.diff()
            gain = wilder(d.clip(lower=0), spec.period)
            return 100 * gain / (gain + wilder(-d.clip(upper=0), spec.period))

        return rsi
    if isinstance(spec, SMA):
        return lambda: c.rolling(spec.period).mean()
    if isinstance(spec, EMA):
        return lambda: c.ewm(span=spec.period, adjust=False).mean()
    if isinstance(spec, MACD):

        def macd() -> Any:
            line = (
                c.ewm(span=spec.fast, adjust=False).mean()
                - c.ewm(span=spec.slow, adjust=False).mean()
            )
            signal = line.ewm(span=spec.signal, adjust=False).mean()
            return line, signal, line - signal

        return macd
    if isinstance(spec, BBands):

        def bbands() -> Any:
            mid = c.rolling(spec.period).mean()
            width = spec.k * c.rolling(spec.period).std(ddof=0)
            return mid + width, mid, mid - width

        return bbands
    if isinstance(spec, ATR):
        return lambda: wilder(true_range(), spec.period)
    if isinstance(spec, ATRRegime):

        def regime() -> Any:
            pct = wilder(true_range(), spec.period).rolling(spec.lookback).rank(pct=True)
            return np.where(pct <= spec.low, -1, np.where(pct >= spec.high, 1, 0))

        return regime
    if isinstance(spec, VolumePercentile):
        return lambda: v.rolling(spec.window).rank(pct=True)
    # the session key is part of the work: ours finds each bar's session from `ts` too
    if isinstance(spec, SessionVWAP):

        def vwap() -> Any:
            day = bars["ts"].dt.floor("D")
            pv = ((h + lo + c) / 3 * v).groupby(day).cumsum()
            return pv / v.groupby(day).cumsum()

        return vwap
    if isinstance(spec, OpeningRange):

        def orb() -> Any:
            day = bars["ts"].dt.floor("D")
            in_range = (bars["ts"] - day) < pd.Timedelta(minutes=spec.minutes)
            top = h.where(in_range).groupby(day).transform("max")
            bottom = lo.where(in_range).groupby(day).transform("min")
            code = np.where(c > top, 1, np.where(c < bottom, -1, 0))
            return top.where(~in_range), bottom.where(~in_range), code

        return orb
    raise TypeError(spec)


def talib_peer(spec: Indicator, bars: pd.DataFrame) -> Callable[[], Any] | None:
    c, h, lo = (bars[k].to_numpy() for k in ("close", "high", "low"))
    calls: dict[type, Callable[[], Any]] = {
        RSI: lambda: talib.RSI(c, getattr(spec, "period", 14)),
        SMA: lambda: talib.SMA(c, getattr(spec, "period", 14)),
        EMA: lambda: talib.EMA(c, getattr(spec, "period", 14)),
        MACD: lambda: talib.MACD(c, 12, 26, 9),
        BBands: lambda: talib.BBANDS(c, 20, 2.0, 2.0, 0),
        ATR: lambda: talib.ATR(h, lo, c, getattr(spec, "period", 14)),
    }
    return calls.get(type(spec))


# ---- runs ------------------------------------------------------------------------------------


def run_batch(specs: list[Indicator], bars: pd.DataFrame, repeat: int) -> list[str]:
    failures = []
    print(f"\nbatch over {len(bars):,} bars (best of {repeat})")
    print(
        f"{'indicator':24s} {'ours ms':>9s} {'talib ms':>9s} {'talib/ours':>10s} "
        f"{'pandas ms':>10s} {'x pandas':>9s} {'talib x pandas':>15s}"
    )
    for spec in specs:
        spec.batch(bars.iloc[:5000])  # compile the numba kernels, load calendars
        calls: dict[str, Callable[[], Any]] = {"ours": lambda spec=spec: spec.batch(bars)}
        peer = talib_peer(spec, bars)
        if peer is not None:
            calls["talib"] = peer
        calls["pandas"] = pandas_peer(spec, bars)
        # Interleaved, best of each: the machine is shared, so noise hits all alike. Each
        # timed call comes right after an untimed one of the same code, and the order
        # rotates with each repeat: the pandas code sweeps the bars out of the caches, and
        # the next two or three passes over them run at memory speed (measured: ATR 2.2 ms
        # instead of 1.3); in a fixed order the same call would always pay for that.
        times: dict[str, list[float]] = {name: [] for name in calls}
        names = list(calls)
        for r in range(repeat):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                calls[name]()
                times[name].append(best_of(calls[name], 1))
        ours = min(times["ours"])
        ta = min(times["talib"]) if peer is not None else None
        pd_time = min(times["pandas"])
        ratio = ta / ours if ta is not None else None
        speedup = pd_time / ours
        print(
            f"{spec.name:24s} {ours * 1e3:9.1f} "
            f"{(f'{ta * 1e3:9.1f}' if ta is not None else '        -')} "
            f"{(f'{ratio:10.2f}' if ratio is not None else '         -')} "
            f"{pd_time * 1e3:10.1f} {speedup:9.1f} "
            f"{(f'{pd_time / ta:15.1f}' if ta is not None else '              -')}"
        )
        if ratio is not None and ratio < TALIB_RATIO:
            failures.append(f"{spec.name}: {ratio:.2f} of TA-Lib's throughput < {TALIB_RATIO}")
        if speedup < PANDAS_SPEEDUP:
            failures.append(f"{spec.name}: {speedup:.1f}x pandas < {PANDAS_SPEEDUP}x")
    return failures


def per_bar_us(update: Callable[[Any], Any], rows: list[dict[str, Any]]) -> float:
    chunk = 100
    times = []
    for i in range(0, len(rows) - chunk + 1, chunk):
        part = rows[i : i + chunk]
        start = time.perf_counter()
        for row in part:
            update(row)
        times.append((time.perf_counter() - start) / chunk)
    return statistics.median(times) * 1e6


def run_live(specs: list[Indicator], bars: pd.DataFrame) -> list[str]:
    failures = []
    rows = bars.to_dict("records")
    tail = bars.iloc[-500:]
    print(f"\nincremental over {len(rows):,} bars (median of 100-bar chunks)")
    print(f"{'indicator':24s} {'update us':>10s} {'batch(last 500) us':>19s} {'ratio':>7s}")
    for spec in specs:
        state = spec.state()
        us = per_bar_us(state.update, rows)
        recompute = best_of(lambda spec=spec: spec.batch(tail), 20) * 1e6
        print(f"{spec.name:24s} {us:10.2f} {recompute:19.1f} {recompute / us:7.0f}")
        if us > LIVE_US:
            failures.append(f"{spec.name}: {us:.2f} us per bar > {LIVE_US}")
    indicators = IndicatorSet(specs)
    us = per_bar_us(indicators.state().update, rows) / len(specs)
    recompute = best_of(lambda: indicators.batch(tail), 20) * 1e6 / len(specs)
    print(f"{'set, per indicator':24s} {us:10.2f} {recompute:19.1f} {recompute / us:7.0f}")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--live-bars", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()
    specs: list[Indicator] = [
        RSI(14),
        RSI(9),
        SMA(10),
        SMA(20),
        SMA(50),
        SMA(200),
        EMA(10),
        EMA(20),
        EMA(50),
        MACD(),
        BBands(),
        ATR(14),
        ATRRegime(),
        VolumePercentile(100),
        SessionVWAP("24/7"),
        OpeningRange(30, "24/7"),
    ]
    started = time.perf_counter()
    bars = make_bars(args.bars)
    failures = run_batch(specs, bars, args.repeat)
    failures += run_live(specs, bars.iloc[: args.live_bars])
    print(f"\ntook {time.perf_counter() - started:.1f} s")
    print("targets met" if not failures else "MISSED:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    main()
