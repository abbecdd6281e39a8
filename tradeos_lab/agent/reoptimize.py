"""The weekly re-optimisation: recent lake bars, their regime, the research sweeps, proposals.

For each symbol of the pipeline: its volatility regime (the latest day's realised volatility of
log returns against the median of the window's days: below 0.75x low, above 1.5x high) and its
momentum (the window's total return), read from the lake's bars of the last `lookback_days`. For
each configured strategy with numeric parameters, a sweep (`lab.research.sweep`, kept as a run)
over a grid around its current parameters (x0.5, x1, x1.5 for each) on those bars, and its best
parameters by Sharpe proposed as the system config `strategy_params.NAME`, with the regime and
momentum per symbol and the sweep's run id as the evidence. A proposal waits for an operator
when the active profile's agent rules say so; once applied, the running Signal Engine trades the
new parameters from its next bar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from tradeos_lab.agent.policy import propose
from tradeos_lab.errors import ValidationError
from tradeos_lab.pipeline.services.signal_engine import params_key
from tradeos_lab.strategies.registry import get_strategy

if TYPE_CHECKING:
    from tradeos_lab.bars import BarSource
    from tradeos_lab.contracts import Audit
    from tradeos_lab.lab import Lab
    from tradeos_lab.stores.records import ConfigProposal

LOOKBACK_DAYS: Final = 30.0
GRID_FACTORS: Final = (0.5, 1.0, 1.5)


@dataclass(frozen=True)
class Reoptimized:
    """One strategy's proposal and the announcement to publish on `audit`."""

    strategy: str
    proposal: ConfigProposal
    announcement: Audit


def regime(bars: pd.DataFrame) -> dict[str, Any]:
    """Volatility regime and momentum of one symbol's bars (oldest first)."""
    index = pd.DatetimeIndex(pd.to_datetime(bars["ts"], utc=True))
    close = pd.Series(bars["close"].to_numpy(dtype=float), index=index)
    returns = pd.Series(np.diff(np.log(close.to_numpy())), index=index[1:])
    daily = returns.groupby(index[1:].floor("D")).std().dropna()
    latest = float(daily.iloc[-1]) if len(daily) else math.nan
    typical = float(daily.median()) if len(daily) else math.nan
    ratio = latest / typical if typical and typical > 0 else math.nan
    label = (
        "unknown"
        if not math.isfinite(ratio)
        else "low"
        if ratio < 0.75
        else "high"
        if ratio > 1.5
        else "normal"
    )
    momentum = float(close.iloc[-1] / close.iloc[0] - 1) if len(close) > 1 else 0.0
    return {
        "volatility_ratio": None if not math.isfinite(ratio) else round(ratio, 6),
        "regime": label,
        "momentum": round(momentum, 6),
        "bars": len(close),
    }


def grid_around(strategy: str, params: dict[str, Any]) -> dict[str, list[Any]]:
    """x0.5, x1, x1.5 of each numeric parameter (whole numbers stay whole, at least 1)."""
    grid: dict[str, list[Any]] = {}
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, int):
            grid[name] = sorted({max(1, round(value * f)) for f in GRID_FACTORS})
        else:
            grid[name] = sorted({value * f for f in GRID_FACTORS})
    if not grid:
        raise ValidationError(f"strategy {strategy!r} has no numeric parameter to sweep")
    return grid


def reoptimize(
    lab: Lab,
    *,
    now: datetime,
    lookback_days: float = LOOKBACK_DAYS,
    bars: BarSource | None = None,
    strategies: tuple[str, ...] | None = None,
) -> list[Reoptimized]:
    """Sweep each strategy on the recent bars of the pipeline's symbols and propose its best
    parameters; strategies or symbols without data are left out."""
    settings = lab.settings
    source = bars if bars is not None else lab.lake
    start = now - timedelta(days=lookback_days)
    frames: dict[str, pd.DataFrame] = {}
    for symbol in settings.pipeline_symbols:
        frame = source.read_bars(symbol, settings.pipeline_timeframe, start, now)
        if len(frame) > 1:
            frames[symbol] = frame
    if not frames:
        return []
    regimes = {s: regime(f) for s, f in frames.items()}
    every = pd.concat(frames.values(), ignore_index=True)
    out: list[Reoptimized] = []
    for name in strategies or settings.pipeline_strategies:
        try:
            strategy = get_strategy(name)
        except ValidationError:
            continue  # a reference that no longer loads: nothing to sweep
        current = strategy.params_type().model_dump()
        try:
            grid = grid_around(name, current)
            result = lab.research.sweep(strategy, every, grid=grid)
        except ValidationError:
            continue
        if not result.table["sharpe"].notna().any():
            continue
        best = result.best("sharpe")
        chosen = {k: _plain(best[k]) for k in grid if k in best}
        value = {**{k: _plain(v) for k, v in current.items()}, **chosen}
        sharpe = round(float(result.table["sharpe"].max()), 4)
        proposal, audit = propose(
            lab.records,
            params_key(strategy.name),
            value,
            reason=(
                f"weekly re-optimisation over {lookback_days:g} days of "
                f"{', '.join(sorted(frames))}: best Sharpe {sharpe} with {chosen} "
                f"(sweep run {result.run_id}); regimes "
                + ", ".join(
                    f"{s} {r['regime']} momentum {r['momentum']:+.2%}"
                    for s, r in sorted(regimes.items())
                )
            ),
        )
        out.append(Reoptimized(name, proposal, audit))
    return out


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers, for JSON."""
    if isinstance(value, np.generic):
        return value.item()
    return value
