"""`tradeos-lab backfill`, `lake gaps`, `lake freshness`, `subscriptions` through click."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from marketdata_helpers import SHARED_REDIS_URL, TimedProviderServer
from provider_servers import API_KEY, SECRET_KEY

from tradeos_lab.cli import cli, main
from tradeos_lab.providers import SyntheticProvider, save_bars
from tradeos_lab.settings import load_settings
from tradeos_lab.stores.lake import Lake


@pytest.fixture
def env(tmp_path: Path, namespace: str) -> dict[str, str]:
    """Settings for the commands: the shared Redis under this test's namespace, a chdb lake."""
    return {
        "TRADEOS_NAMESPACE": namespace,
        "TRADEOS_DATA_DIR": str(tmp_path / "lab"),
        "TRADEOS_BUS_URL": SHARED_REDIS_URL,
        "TRADEOS_CACHE_URL": SHARED_REDIS_URL,
        "TRADEOS_FLAGS_URL": SHARED_REDIS_URL,
        "TRADEOS_RECORDS_URL": f"sqlite:///{tmp_path / 'records.db'}",
        "TRADEOS_LAKE_URL": f"chdb://{tmp_path / 'lake'}",
        "TRADEOS_LOG_LEVEL": "WARNING",
    }


@pytest.mark.parametrize(
    "command",
    [
        ["backfill"],
        ["lake"],
        ["lake", "gaps"],
        ["lake", "freshness"],
        ["subscriptions"],
        ["subscriptions", "list"],
        ["subscriptions", "add"],
        ["subscriptions", "remove"],
    ],
)
def test_every_data_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.filterwarnings("ignore::UserWarning")  # one Redis server for the three tiers
def test_backfill_of_subscribed_symbols_then_gaps_and_freshness(
    env: dict[str, str], tmp_path: Path
) -> None:
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        return result.exit_code, result.output

    code, out = run("subscriptions", "add", "algo", "btc-usd", "ETH-USD", "-t", "1h")
    assert code == 0
    assert "algo holds 1 reference(s) to BTC-USD 1h" in out

    code, out = run("backfill", "-t", "1h", "--days", "5", "--seed", "3", "--no-progress")
    assert code == 0, out
    assert "backfill synthetic-1h: 2 symbols" in out
    code, out = run("backfill", "-t", "1h", "--status")
    assert out.count("done") == 2

    with Lake.open(load_settings(lake_url=env["TRADEOS_LAKE_URL"])) as lake:
        coverage = lake.coverage(["BTC-USD"]).set_index("timeframe")
        first, last = coverage.loc["1h", "earliest"], coverage.loc["1h", "latest"]
        holes = lake.gaps("BTC-USD", "1h", first, last + pd.Timedelta(hours=1))
        ledger = lake.gap_ledger("BTC-USD", "1h", open_only=True)

    code, out = run("lake", "gaps", "BTC-USD", "-t", "1h")
    assert code == 0
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("BTC-USD"))
    assert int(row[-3]) == len(holes)  # gaps, missing_bars, largest_gap_bars
    assert int(row[-2]) == int(holes["missing_bars"].sum())

    code, out = run("lake", "gaps", "--ledger", "BTC-USD")
    assert code == 0
    if ledger.empty:
        assert "the gap ledger is empty" in out
    else:
        assert out.count("BTC-USD") == len(ledger)

    code, out = run("lake", "freshness", "-t", "1h")
    assert code == 0, out  # the backfill reached the last completed bar
    assert "ETH-USD" in out

    run("subscriptions", "add", "algo", "SOL-USD", "-t", "1h")
    code, out = run("lake", "freshness", "-t", "1h", "--stale-only")
    assert code == 1  # SOL-USD is needed but has no bars
    assert "SOL-USD" in out
    assert "BTC-USD" not in out

    code, out = run("subscriptions", "remove", "algo")
    assert "released 3 pair(s)" in out
    code, out = run("subscriptions", "list")
    assert "no subscriptions" in out


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bad_symbols_and_options_fail_with_one_clear_line(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    with pytest.raises(SystemExit) as exit_info:
        main(["backfill", "AA';--", "--no-progress"])
    assert exit_info.value.code == 1
    assert "error: symbol" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        main(["backfill", "BTC-USD", "--provider", "file"])
    assert exit_info.value.code == 2
    assert "--file" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        main(["lake", "gaps", "-t", "7m"])
    assert exit_info.value.code == 2
    assert os.environ["TRADEOS_NAMESPACE"] == env["TRADEOS_NAMESPACE"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_backfill_from_alpaca_remembers_closed_market_hours(
    env: dict[str, str], provider_server: TimedProviderServer
) -> None:
    """Stock bars exist on weekdays only: the closed stretches end in the gap ledger, and a
    second pass asks Alpaca again only for a hole that ended recently (data may come late)."""
    env = {
        **env,
        "TRADEOS_ALPACA_DATA_URL": provider_server.url,
        "TRADEOS_ALPACA_API_KEY": API_KEY,
        "TRADEOS_ALPACA_SECRET_KEY": SECRET_KEY,
    }
    runner = CliRunner()
    args = ["backfill", "AAPL", "--provider", "alpaca", "-t", "1h", "--days", "10"]
    first = runner.invoke(cli, [*args, "--no-progress"], env=env, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    asked = provider_server.count("/v2/stocks/bars")
    assert asked >= 1

    second = runner.invoke(cli, [*args, "--no-progress"], env=env, catch_exceptions=False)
    assert second.exit_code == 0, second.output
    recent = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=7)  # recheck_after is 6 h
    for request in provider_server.requests_to("/v2/stocks/bars")[asked:]:
        assert pd.Timestamp(request.query["end"]) >= recent, "an old known hole was asked again"

    with Lake.open(load_settings(lake_url=env["TRADEOS_LAKE_URL"])) as lake:
        bars = lake.read_bars("AAPL", "1h")
        ledger = lake.gap_ledger("AAPL", "1h", open_only=True)
    assert len(bars) > 0
    assert (bars["ts"].dt.day_of_week < 5).all()
    assert (ledger["gap_start"].dt.day_of_week >= 5).any()  # a weekend is recorded as a hole


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_backfill_replays_a_bar_file(env: dict[str, str], tmp_path: Path) -> None:
    now = pd.Timestamp.now(tz="UTC").floor("h")
    bars = SyntheticProvider(seed=4).fetch_bars("BTC-USD", "1h", now - pd.Timedelta(days=3), now)
    path = save_bars(bars, tmp_path / "btc.parquet")

    args = ["backfill", "BTC-USD", "--provider", "file", "--file", str(path), "-t", "1h"]
    result = CliRunner().invoke(
        cli,
        [*args, "--days", "2", "--no-progress"],
        env=env,
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.output
    with Lake.open(load_settings(lake_url=env["TRADEOS_LAKE_URL"])) as lake:
        stored = lake.read_bars("BTC-USD", "1h")
    assert len(stored) == (bars["ts"] >= now - pd.Timedelta(days=2)).sum()
