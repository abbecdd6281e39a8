"""Parameter sweeps and walk-forward validation, in one process or on a Dask cluster.

`sweep` runs every combination of a parameter grid: the bars are loaded and checked once, the
combinations' signals (the strategy's batch form, each distinct indicator computed once) go side
by side as the columns of one simulation per chunk (`backtest.simulate`, the metrics folded in as
it runs), and a chunk holds at most `chunk_cells` bars x columns, which bounds memory whatever
the grid. Only the metrics of a chunk are kept.

Chunks run in this process, or on Dask (`dask.distributed`): a `LocalCluster` of `workers`
processes when more than one is asked for, or the cluster whose scheduler address is given
(`research_scheduler` in the settings). The chunks and their order are the same either way, so
the results are identical.

`walk_forward` sweeps each train window, takes its best parameters by a metric and backtests
them on the following test window (indicators warmed up on the bars before it, no position
before it), and reports in- against out-of-sample.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tradeos_lab.bars import BarSource
from tradeos_lab.errors import ValidationError
from tradeos_lab.research.backtest import (
    METRICS,
    BacktestProfile,
    Stops,
    portfolio_metrics,
    simulate,
    vectorbt_engine,
)
from tradeos_lab.research.market import BarSet, Market, load_bars
from tradeos_lab.research.runs import start_run
from tradeos_lab.strategies.base import Strategy
from tradeos_lab.strategies.batch import SIGNAL_MASKS
from tradeos_lab.strategies.registry import get_strategy

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from tradeos_lab.stores.records import RecordsStore

DEFAULT_CHUNK_CELLS = 10_000_000
"""Bars x columns per vectorbt call: ~10 MB per signal mask and ~80 MB per price or value
matrix, whatever the size of the grid."""
Progress = Callable[[int, int], None]
"""Called with (combinations done, combinations in all) as chunks finish."""


def strategy_class(strategy: type[Strategy[Any]] | str) -> type[Strategy[Any]]:
    if isinstance(strategy, str):
        return get_strategy(strategy)
    if isinstance(strategy, type) and issubclass(strategy, Strategy):
        return strategy
    raise ValidationError(f"a sweep takes a Strategy class or name, got {type(strategy).__name__}")


def parameter_sets(
    strategy_type: type[Strategy[Any]], grid: dict[str, Any]
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The grid's parameter names and every combination the parameters accept (e.g. fast <
    slow), in grid order; a grid with none valid is an error."""
    if not grid:
        raise ValidationError("a sweep needs a parameter grid (fast=[5, 10], slow=[20, 50])")
    names = list(grid)
    unknown = sorted(set(names) - set(strategy_type.params_type.model_fields))
    if unknown:
        raise ValidationError(f"strategy {strategy_type.name!r} has no parameters {unknown}")
    choices = [_choices(grid[n]) for n in names]
    valid: list[tuple[Any, ...]] = []
    rejected: list[str] = []
    for combo in itertools.product(*choices):
        try:
            strategy_type(dict(zip(names, combo, strict=True)))
        except ValidationError as e:
            rejected.append(str(e))
            continue
        valid.append(combo)
    if not valid:
        raise ValidationError(f"no combination of the grid is valid: {'; '.join(rejected[:3])}")
    return names, valid


def grid_values_of(names: list[str], combos: list[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """The values each parameter took over the valid combinations (what a run record keeps)."""
    return {n: sorted({c[i] for c in combos}) for i, n in enumerate(names)}


def _choices(value: Any) -> list[Any]:
    if isinstance(value, str) or not isinstance(value, Sequence | range | np.ndarray):
        return [value]
    out = [v.item() if isinstance(v, np.generic) else v for v in value]
    if not out:
        raise ValidationError("a grid parameter has no values")
    return out


def run_chunk(
    market: Market,
    strategy_type: type[Strategy[Any]],
    names: list[str],
    combos: list[tuple[Any, ...]],
    *,
    profile: BacktestProfile,
    stops: Stops,
    start_row: int = 0,
) -> pd.DataFrame:
    """The metrics of `combos` (rows in their order) from one vectorbt call: what a worker runs.

    Signals before `start_row` are cleared (a walk-forward test window's warm-up)."""
    n_rows, n_symbols = market.shape
    width = len(combos) * n_symbols
    # Column-major: each combination's column is written, and simulated, as one contiguous run.
    masks = {name: np.zeros((n_rows, width), dtype=np.bool_, order="F") for name in SIGNAL_MASKS}
    for k, combo in enumerate(combos):
        market.signals(
            strategy_type(dict(zip(names, combo, strict=True))),
            out={name: masks[name][:, k * n_symbols : (k + 1) * n_symbols] for name in masks},
        )
    if start_row:
        for name in SIGNAL_MASKS:
            masks[name][:start_row] = False
    columns = pd.MultiIndex.from_product(
        [range(len(combos)), market.symbols], names=["combination", "symbol"]
    )
    group_by = "combination" if n_symbols > 1 else None
    found = simulate(
        market,
        masks,
        columns,
        profile=profile,
        stops=stops,
        group_by=group_by,
        start_row=start_row,
    )
    return portfolio_metrics(found, market.index)


@contextmanager
def dask_client(workers: int, scheduler: str | None) -> Iterator[Any]:
    """A Dask client for the scheduler at `scheduler`, or on a `LocalCluster` of `workers`
    single-threaded processes when more than one is asked for; None for this process alone."""
    if scheduler is None and workers <= 1:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler, timeout="30s") as client:  # type: ignore[no-untyped-call]
            yield client
        return
    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        yield client


def _chunks(total: int, size: int) -> list[range]:
    return [range(i, min(i + size, total)) for i in range(0, total, size)]


def sweep_metrics(
    market: Market,
    strategy_type: type[Strategy[Any]],
    names: list[str],
    combos: list[tuple[Any, ...]],
    *,
    profile: BacktestProfile,
    stops: Stops,
    chunk_cells: int = DEFAULT_CHUNK_CELLS,
    workers: int = 1,
    scheduler: str | None = None,
    progress: Progress | None = None,
    start_row: int = 0,
) -> pd.DataFrame:
    """`METRICS` of every combination (index: the parameters), chunk by chunk."""
    if chunk_cells < 1:
        raise ValidationError(f"chunk_cells must be positive, got {chunk_cells}")
    n_rows, n_symbols = market.shape
    per_chunk = max(1, chunk_cells // (n_rows * n_symbols))
    chunks = _chunks(len(combos), per_chunk)
    parts: list[pd.DataFrame] = [pd.DataFrame()] * len(chunks)
    done = 0
    with dask_client(workers, scheduler) as client:
        if client is None:
            for i, rows in enumerate(chunks):
                parts[i] = run_chunk(
                    market,
                    strategy_type,
                    names,
                    [combos[r] for r in rows],
                    profile=profile,
                    stops=stops,
                    start_row=start_row,
                )
                done += len(rows)
                if progress:
                    progress(done, len(combos))
        else:
            from distributed import as_completed

            shared = client.scatter(market, broadcast=True)
            futures = {
                client.submit(
                    run_chunk,
                    shared,
                    strategy_type,
                    names,
                    [combos[r] for r in rows],
                    profile=profile,
                    stops=stops,
                    start_row=start_row,
                    pure=False,
                ): i
                for i, rows in enumerate(chunks)
            }
            for future in as_completed(futures):  # type: ignore[no-untyped-call]
                i = futures[future]
                parts[i] = future.result()
                done += len(chunks[i])
                if progress:
                    progress(done, len(combos))
    table = pd.concat(parts, ignore_index=True)
    table.index = pd.MultiIndex.from_tuples(combos, names=names)
    return table


@dataclass
class SweepResult:
    """Every combination's metrics (`table`: index the parameters, columns `METRICS`)."""

    strategy_type: type[Strategy[Any]]
    table: pd.DataFrame
    barset: BarSet
    engine: str
    run_id: Any = None

    def best(self, metric: str = "sharpe") -> dict[str, Any]:
        """The parameters with the highest `metric` (lowest drawdown counts as highest)."""
        return best_parameters(self.table, metric)

    def heatmap(self, x: str, y: str, metric: str = "sharpe") -> go.Figure:
        """`metric` over parameters `x` and `y` (the best over any other parameter)."""
        from tradeos_lab.research.figures import heatmap_figure

        _check_metric(metric)
        levels = list(self.table.index.names)
        for name in (x, y):
            if name not in levels:
                raise ValidationError(f"{name!r} is not a swept parameter; there are {levels}")
        pivot = self.table[metric].groupby(level=[y, x]).max().unstack(x)
        return heatmap_figure(pivot, metric=metric, title=f"{self.strategy_type.name}: {metric}")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValidationError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def best_parameters(table: pd.DataFrame, metric: str) -> dict[str, Any]:
    _check_metric(metric)
    scores = table[metric]
    if scores.isna().all():
        raise ValidationError(f"no combination has a {metric}; the bars may be too few")
    best = scores.idxmax()
    key = best if isinstance(best, tuple) else (best,)
    return dict(zip([str(n) for n in table.index.names], key, strict=True))


def jsonable(value: Any) -> Any:
    """Numbers, strings, lists and dicts for a run record: numpy scalars become Python ones,
    NaN and infinities null, timestamps ISO strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    return json.loads(json.dumps(value, default=str))


def sweep(
    strategy: type[Strategy[Any]] | str,
    bars: pd.DataFrame | BarSource | BarSet,
    *,
    grid: dict[str, Any] | None = None,
    symbols: str | Sequence[str] | None = None,
    timeframe: str | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    profile: BacktestProfile | None = None,
    stops: Stops | None = None,
    chunk_cells: int = DEFAULT_CHUNK_CELLS,
    workers: int = 1,
    scheduler: str | None = None,
    records: RecordsStore | None = None,
    progress: Progress | None = None,
    **grid_values: Any,
) -> SweepResult:
    """Every combination of the grid (`fast=range(5, 50), slow=[50, 100]`, or `grid={...}`)
    backtested on `bars`; with `records` the sweep is kept as one run."""
    strategy_type = strategy_class(strategy)
    names, combos = parameter_sets(strategy_type, {**(grid or {}), **grid_values})
    barset = load_bars(bars, symbols=symbols, timeframe=timeframe, start=start, end=end)
    profile = profile or BacktestProfile()
    stops = stops or Stops()
    engine = vectorbt_engine()
    run_id = None
    if records is not None:
        run_id = start_run(
            records,
            kind="sweep",
            strategy=strategy_type,
            parameters={
                "grid": jsonable(grid_values_of(names, combos)),
                "combinations": len(combos),
                "profile": profile.to_dict(),
                "stops": stops.to_dict(),
            },
            barset=barset,
            engine=engine,
        )
    try:
        table = sweep_metrics(
            Market.of(barset),
            strategy_type,
            names,
            combos,
            profile=profile,
            stops=stops,
            chunk_cells=chunk_cells,
            workers=workers,
            scheduler=scheduler,
            progress=progress,
        )
    except Exception as e:
        if records is not None and run_id is not None:
            records.finish_backtest(run_id, error=f"{type(e).__name__}: {e}"[:2000])
        raise
    result = SweepResult(strategy_type, table, barset, engine, run_id)
    if records is not None and run_id is not None:
        top = table.sort_values("sharpe", ascending=False).head(20).reset_index()
        records.finish_backtest(
            run_id,
            results=jsonable(
                {
                    "best_by_sharpe": result.best("sharpe")
                    if table["sharpe"].notna().any()
                    else None,
                    "top": top.to_dict(orient="records"),
                }
            ),
        )
    return result


@dataclass
class WalkForwardResult:
    """Per window: its dates, the best parameters of the train window, their in-sample and
    out-of-sample metrics (`windows`); `summary` compares the two over all windows."""

    strategy_type: type[Strategy[Any]]
    metric: str
    windows: pd.DataFrame
    run_id: Any = None
    summary: pd.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        rows = {}
        for m in METRICS:
            inside = self.windows[f"in_sample_{m}"].mean()
            outside = self.windows[f"out_of_sample_{m}"].mean()
            rows[m] = {
                "in_sample": inside,
                "out_of_sample": outside,
                "degradation": inside - outside,
                "retained": outside / inside if inside else np.nan,
            }
        self.summary = pd.DataFrame(rows).T

    def plot(self) -> go.Figure:
        from tradeos_lab.research.figures import walk_forward_figure

        return walk_forward_figure(self.windows, metric=self.metric)


def walk_forward(
    strategy: type[Strategy[Any]] | str,
    bars: pd.DataFrame | BarSource | BarSet,
    *,
    train: str | pd.Timedelta,
    test: str | pd.Timedelta,
    expanding: bool = False,
    metric: str = "sharpe",
    grid: dict[str, Any] | None = None,
    symbols: str | Sequence[str] | None = None,
    timeframe: str | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    profile: BacktestProfile | None = None,
    stops: Stops | None = None,
    chunk_cells: int = DEFAULT_CHUNK_CELLS,
    workers: int = 1,
    scheduler: str | None = None,
    records: RecordsStore | None = None,
    **grid_values: Any,
) -> WalkForwardResult:
    """Rolling (or `expanding`) train windows of `train`, each followed by a test window of
    `test` ("90D", "4W"); windows step by `test` until the bars end."""
    _check_metric(metric)
    strategy_type = strategy_class(strategy)
    names, combos = parameter_sets(strategy_type, {**(grid or {}), **grid_values})
    barset = load_bars(bars, symbols=symbols, timeframe=timeframe, start=start, end=end)
    profile = profile or BacktestProfile()
    stops = stops or Stops()
    train_span, test_span = _span(train, "train"), _span(test, "test")
    first, last = barset.start, barset.end
    options: dict[str, Any] = {
        "profile": profile,
        "stops": stops,
        "chunk_cells": chunk_cells,
        "workers": workers,
        "scheduler": scheduler,
    }
    rows: list[dict[str, Any]] = []
    test_start = first + train_span
    while test_start + test_span <= last:
        train_start = first if expanding else test_start - train_span
        test_end = test_start + test_span
        in_sample = sweep_metrics(
            Market.of(barset.window(train_start, test_start)),
            strategy_type,
            names,
            combos,
            **options,
        )
        best = best_parameters(in_sample, metric)
        key = tuple(best[n] for n in names)
        # The test backtest reads the train bars too, for indicator warm-up, and trades only
        # from the test window's first bar.
        market = Market.of(barset.window(train_start, test_end))
        first_test_row = int(market.index.searchsorted(test_start))
        out_of_sample = sweep_metrics(
            market, strategy_type, names, [key], start_row=first_test_row, **options
        ).iloc[0]
        rows.append(
            {
                "train_start": train_start,
                "test_start": test_start,
                "test_end": test_end,
                **best,
                **{f"in_sample_{m}": in_sample.loc[key, m] for m in METRICS},
                **{f"out_of_sample_{m}": out_of_sample[m] for m in METRICS},
            }
        )
        test_start = test_end
    if not rows:
        raise ValidationError(
            f"the bars span {last - first}, too short for one train window of {train_span} "
            f"and a test window of {test_span}"
        )
    result = WalkForwardResult(strategy_type, metric, pd.DataFrame(rows))
    if records is not None:
        run_id = start_run(
            records,
            kind="walk_forward",
            strategy=strategy_type,
            parameters=jsonable(
                {
                    "grid": grid_values_of(names, combos),
                    "train": str(train_span),
                    "test": str(test_span),
                    "expanding": expanding,
                    "metric": metric,
                    "profile": profile.to_dict(),
                    "stops": stops.to_dict(),
                }
            ),
            barset=barset,
            engine=vectorbt_engine(),
        )
        records.finish_backtest(
            run_id,
            results=jsonable(
                {
                    "windows": result.windows.to_dict(orient="records"),
                    "summary": result.summary.to_dict(orient="index"),
                }
            ),
        )
        result.run_id = run_id
    return result


def _span(value: str | pd.Timedelta, name: str) -> pd.Timedelta:
    try:
        span = pd.Timedelta(value)
    except (ValueError, TypeError):
        raise ValidationError(f"{name} window {value!r} is not a duration (e.g. '90D')") from None
    if span <= pd.Timedelta(0):
        raise ValidationError(f"{name} window must be positive, got {value!r}")
    return span
