"""`tradeos-lab backtest CONFIG.toml`: a backtest or a sweep from a file, kept in the records."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from tradeos_lab.cli import cli, main
from tradeos_lab.stores.records import RecordsStore


def _run(config: Path, records: RecordsStore, data_dir: Path, *args: str) -> str:
    env = {
        "TRADEOS_RECORDS_URL": str(records.engine.url.render_as_string(hide_password=False)),
        "TRADEOS_DATA_DIR": str(data_dir),
    }
    result = CliRunner().invoke(cli, ["backtest", str(config), *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def _write(tmp_path: Path, bars: pd.DataFrame, parameters: str, extra: str = "") -> Path:
    bars.to_csv(tmp_path / "bars.csv", index=False)
    config = tmp_path / "run.toml"
    config.write_text(
        f"""strategy = "sma_cross"
[parameters]
{parameters}
[bars]
source = "file"
path = "bars.csv"
symbols = ["AAA"]
timeframe = "5m"
[profile]
fee_bps = 5
{extra}"""
    )
    return config


def test_a_backtest_prints_its_metrics_and_run_id(
    records: RecordsStore, one_symbol: pd.DataFrame, tmp_path: Path
) -> None:
    config = _write(tmp_path, one_symbol, "fast = 10\nslow = 40", "[stops]\nstop_loss = 0.01\n")
    output = _run(config, records, tmp_path)
    assert "sharpe" in output and "max_drawdown" in output
    run_id = re.search(r"run id: (\S+)", output)
    assert run_id is not None
    run = records.backtest(uuid.UUID(run_id.group(1)))
    assert run.kind == "backtest" and run.state == "succeeded"
    assert run.parameters["strategy"] == {"fast": 10, "slow": 40, "allow_short": True}
    assert run.parameters["profile"]["fee_bps"] == 5
    assert run.parameters["stops"]["stop_loss"] == 0.01


def test_lists_of_values_make_a_sweep(
    records: RecordsStore, one_symbol: pd.DataFrame, tmp_path: Path
) -> None:
    config = _write(tmp_path, one_symbol, "fast = [5, 10]\nslow = [20, 40]")
    output = _run(config, records, tmp_path, "--top", "3")
    assert "4 combinations" in output
    run_id = re.search(r"run id: (\S+)", output)
    assert run_id is not None
    assert records.backtest(uuid.UUID(run_id.group(1))).kind == "sweep"


def test_a_bad_config_names_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('strategy = "sma_cross"\n[bars]\nsource = "file"\ncolour = "red"\n')
    with pytest.raises(SystemExit) as exit_:
        main(["--data-dir", str(tmp_path), "backtest", str(config), "--no-record"])
    assert exit_.value.code != 0
    assert "bars.colour" in capsys.readouterr().err
