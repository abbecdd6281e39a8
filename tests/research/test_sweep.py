"""Sweeps: chunked, vectorized, the same on Dask; walk-forward windows; heatmaps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tradeos_lab
from tradeos_lab.errors import ValidationError
from tradeos_lab.research import BacktestProfile
from tradeos_lab.research.market import Market, load_bars
from tradeos_lab.research.sweep import sweep, walk_forward
from tradeos_lab.strategies import SmaCross
from tradeos_lab.strategies.batch import SIGNAL_MASKS
from tradeos_lab.strategies.registry import get_strategy

GRID = {"fast": [5, 10, 15], "slow": [20, 30, 40]}
PROFILE = BacktestProfile(position_pct=50)


@pytest.fixture(scope="module")
def single_process(two_symbols: pd.DataFrame) -> pd.DataFrame:
    return sweep(SmaCross, two_symbols, profile=PROFILE, **GRID).table


def test_every_valid_combination_gets_its_metrics(single_process: pd.DataFrame) -> None:
    assert single_process.index.names == ["fast", "slow"]
    assert len(single_process) == 9
    assert single_process["trades"].gt(0).all()
    assert single_process["total_return"].nunique() == 9


def test_chunks_bound_the_call_and_do_not_change_the_results(
    two_symbols: pd.DataFrame, single_process: pd.DataFrame
) -> None:
    seen: list[tuple[int, int]] = []
    rows = two_symbols["ts"].nunique()
    chunked = sweep(
        SmaCross,
        two_symbols,
        profile=PROFILE,
        chunk_cells=rows * 2 * 2,
        progress=lambda done, total: seen.append((done, total)),
        **GRID,
    )
    assert seen == [(2, 9), (4, 9), (6, 9), (8, 9), (9, 9)]
    pd.testing.assert_frame_equal(chunked.table, single_process)


@pytest.mark.parametrize("name", ["sma_cross", "rsi_reversion", "macd_trend"])
@pytest.mark.parametrize("bars", ["one_symbol", "two_symbols"])
def test_a_combinations_columns_hold_the_strategys_own_signal_masks(
    name: str, bars: str, request: pytest.FixtureRequest
) -> None:
    frame: pd.DataFrame = request.getfixturevalue(bars)
    strategy = get_strategy(name)()
    market = Market.of(load_bars(frame))
    n_rows, n_symbols = market.shape
    chunk = {m: np.zeros((n_rows, 2 * n_symbols), dtype=np.bool_, order="F") for m in SIGNAL_MASKS}
    market.signals(strategy, out={m: chunk[m][:, n_symbols:] for m in SIGNAL_MASKS})
    for j, symbol in enumerate(market.symbols):
        own = strategy.signals(frame[frame["symbol"] == symbol])
        rows = market.index.get_indexer(pd.DatetimeIndex(own["ts"]))
        for m in SIGNAL_MASKS:
            column = chunk[m][:, n_symbols + j]
            np.testing.assert_array_equal(column[rows], own[m].to_numpy())
            assert column.sum() == own[m].sum()  # no signal where the symbol has no bar
            assert not chunk[m][:, j].any()  # another combination's column is left alone
    assert chunk["exits"][:, n_symbols:].any() and chunk["short_exits"][:, n_symbols:].any()


def test_combinations_the_strategy_rejects_are_left_out(one_symbol: pd.DataFrame) -> None:
    result = sweep(SmaCross, one_symbol, fast=[10, 30], slow=[20, 40])
    assert list(result.table.index) == [(10, 20), (10, 40), (30, 40)]
    with pytest.raises(ValidationError, match="no combination"):
        sweep(SmaCross, one_symbol, fast=[50], slow=[20])
    with pytest.raises(ValidationError, match="no parameters"):
        sweep(SmaCross, one_symbol, speed=[1])
    with pytest.raises(ValidationError, match="unknown metric"):
        result.best("luck")


def test_the_heatmap_shows_a_metric_over_two_parameters(two_symbols: pd.DataFrame) -> None:
    result = sweep(SmaCross, two_symbols, profile=PROFILE, **GRID)
    figure = result.heatmap("fast", "slow", "total_return")
    heat = figure.data[0]
    assert list(heat.x) == ["5", "10", "15"] and list(heat.y) == ["20", "30", "40"]
    assert heat.z[0][1] == pytest.approx(result.table.loc[(10, 20), "total_return"])


def test_walk_forward_tests_each_train_windows_best_on_the_next_window(
    one_symbol: pd.DataFrame,
) -> None:
    rolling = walk_forward(SmaCross, one_symbol, train="3D", test="2D", fast=[5, 10], slow=[20, 40])
    windows = rolling.windows
    assert len(windows) == 3
    assert (windows["test_start"] - windows["train_start"] == pd.Timedelta("3D")).all()
    assert (
        windows["test_end"].iloc[:-1].to_numpy() == windows["test_start"].iloc[1:].to_numpy()
    ).all()
    first = windows.iloc[0]
    train = one_symbol.loc[one_symbol["ts"] < first["test_start"]]
    swept = sweep(SmaCross, train, fast=[5, 10], slow=[20, 40])
    assert swept.best("sharpe") == {"fast": first["fast"], "slow": first["slow"]}
    assert first["in_sample_sharpe"] == swept.table["sharpe"].max()
    summary = rolling.summary
    assert summary.loc["sharpe", "degradation"] == pytest.approx(
        windows["in_sample_sharpe"].mean() - windows["out_of_sample_sharpe"].mean()
    )
    expanding = walk_forward(
        SmaCross, one_symbol, train="3D", test="2D", expanding=True, fast=[5, 10], slow=[20, 40]
    )
    assert (expanding.windows["train_start"] == one_symbol["ts"].min()).all()
    assert len(rolling.plot().data) == 2
    with pytest.raises(ValidationError, match="too short"):
        walk_forward(SmaCross, one_symbol, train="30D", test="2D", fast=[5], slow=[20])


def test_a_local_dask_cluster_gives_the_single_process_results(
    two_symbols: pd.DataFrame, single_process: pd.DataFrame
) -> None:
    rows = two_symbols["ts"].nunique()
    on_dask = sweep(
        SmaCross, two_symbols, profile=PROFILE, workers=2, chunk_cells=rows * 2 * 3, **GRID
    )
    pd.testing.assert_frame_equal(on_dask.table, single_process)


@pytest.fixture
def dask_processes(tmp_path: Path) -> Iterator[str]:
    """A scheduler and two workers as separate processes on loopback; yields the address."""
    env = {**os.environ, "PYTHONPATH": str(Path(tradeos_lab.__file__).parents[1])}
    scheduler_file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    processes = [
        subprocess.Popen(
            [
                *dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        for _ in range(2):
            processes.append(
                subprocess.Popen(
                    [
                        *dask,
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def test_a_sweep_runs_on_a_scheduler_and_two_worker_processes(
    dask_processes: str, two_symbols: pd.DataFrame, single_process: pd.DataFrame
) -> None:
    from distributed import Client

    rows = two_symbols["ts"].nunique()
    on_cluster = sweep(
        SmaCross,
        two_symbols,
        profile=PROFILE,
        scheduler=dask_processes,
        chunk_cells=rows * 2 * 2,
        **GRID,
    )
    pd.testing.assert_frame_equal(on_cluster.table, single_process)
    with Client(dask_processes) as client:
        assert len(client.scheduler_info()["workers"]) == 2
