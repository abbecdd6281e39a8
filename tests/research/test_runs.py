"""Every run is kept in the records' backtest runs and can be listed, loaded and compared."""

from __future__ import annotations

import pandas as pd
import pytest

from tradeos_lab.errors import ValidationError
from tradeos_lab.research.lab import Research
from tradeos_lab.research.runs import strategy_hash
from tradeos_lab.settings import load_settings
from tradeos_lab.stores.records import RecordsStore
from tradeos_lab.strategies import SmaCross


def test_runs_are_kept_listed_loaded_and_compared(
    records: RecordsStore, one_symbol: pd.DataFrame, tmp_path: object
) -> None:
    research = Research(lambda: records, load_settings(data_dir=tmp_path))
    first = research.backtest(SmaCross(fast=10, slow=40), one_symbol)
    second = research.backtest(SmaCross(fast=5, slow=20), one_symbol)
    swept = research.sweep(SmaCross, one_symbol, fast=[5, 10], slow=[20, 40])

    listed = research.runs()
    assert list(listed["run_id"]) == [str(swept.run_id), str(second.run_id), str(first.run_id)]
    assert list(listed["kind"]) == ["sweep", "backtest", "backtest"]

    loaded = research.load(str(first.run_id))
    assert loaded.state == "succeeded"
    assert loaded.parameters["strategy"] == {"fast": 10, "slow": 40, "allow_short": True}
    assert loaded.parameters["symbols"] == ["AAA"]
    assert loaded.parameters["timeframe"] == "5m"
    assert loaded.strategy_hash == strategy_hash(SmaCross)
    assert loaded.data_hash == first.barset.data_hash
    assert loaded.data_source == "dataframe"
    assert loaded.engine == first.engine
    assert loaded.code_version.startswith("tradeos-lab==")
    assert loaded.metrics == pytest.approx(first.metrics, nan_ok=True)
    assert loaded.equity is not None
    pd.testing.assert_series_equal(loaded.equity, first.equity, check_freq=False)

    compared = research.compare([first.run_id, second.run_id])
    assert list(compared.index) == [str(first.run_id), str(second.run_id)]
    assert compared.loc[str(second.run_id), "parameters"] == "fast=5, slow=20, allow_short=True"
    assert compared.loc[str(first.run_id), "trades"] == first.metrics["trades"]

    sweep_run = research.load(swept.run_id)
    assert sweep_run.parameters["grid"] == {"fast": [5, 10], "slow": [20, 40]}
    assert sweep_run.results is not None
    assert sweep_run.results["best_by_sharpe"] == swept.best("sharpe")
    assert len(sweep_run.results["top"]) == 4


def test_a_walk_forward_is_kept_with_its_windows(
    records: RecordsStore, one_symbol: pd.DataFrame, tmp_path: object
) -> None:
    research = Research(lambda: records, load_settings(data_dir=tmp_path))
    result = research.walk_forward(
        SmaCross, one_symbol, train="4D", test="2D", fast=[5, 10], slow=[20, 40]
    )
    run = research.load(result.run_id)
    assert run.kind == "walk_forward"
    assert run.results is not None
    assert len(run.results["windows"]) == len(result.windows) == 3
    assert research.runs(kind="walk_forward")["run_id"].tolist() == [str(result.run_id)]


def test_unknown_runs_are_validation_errors(records: RecordsStore, tmp_path: object) -> None:
    research = Research(lambda: records, load_settings(data_dir=tmp_path))
    with pytest.raises(ValidationError, match="not a run id"):
        research.load("nope")
    with pytest.raises(ValidationError, match="no backtest run"):
        research.load("00000000-0000-0000-0000-000000000000")
    with pytest.raises(ValidationError, match="kind"):
        research.runs(kind="other")
