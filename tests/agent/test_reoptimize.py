"""The weekly re-optimisation on the lake's recent bars (chdb): a sweep around the strategy's
parameters, kept as a run, its best parameters proposed as system config pending approval, with
each symbol's regime and momentum in the reason; once a week across agent processes."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from tradeos_lab.agent.reoptimize import grid_around, regime, reoptimize
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.agent import Agent

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


def bars(symbol: str, periods: int, seed: int, *, calm_then_wild: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sigma = np.full(periods, 0.001)
    if calm_then_wild:
        sigma[-1440:] = 0.004  # the last day four times as volatile
    closes = 100 * np.exp(np.cumsum(rng.normal(0.00002, sigma)))
    opens = np.concatenate([[100.0], closes[:-1]])
    end = pd.Timestamp(NOW).floor("D")
    return pd.DataFrame(
        {
            "symbol": symbol,
            "timeframe": "1m",
            "ts": pd.date_range(end=end - pd.Timedelta(minutes=1), periods=periods, freq="1min"),
            "open": opens,
            "high": np.maximum(opens, closes) * 1.0005,
            "low": np.minimum(opens, closes) * 0.9995,
            "close": closes,
            "volume": 100.0,
        }
    )


def test_the_regime_reads_the_latest_day_against_the_window() -> None:
    wild = regime(bars("BTC-USD", 4 * 1440, 1, calm_then_wild=True))
    assert wild["regime"] == "high" and wild["volatility_ratio"] > 3
    calm = regime(bars("BTC-USD", 4 * 1440, 1))
    assert calm["regime"] == "normal"


def test_the_grid_spans_each_numeric_parameter() -> None:
    assert grid_around("sma_cross", {"fast": 10, "slow": 50, "allow_short": True}) == {
        "fast": [5, 10, 15],
        "slow": [25, 50, 75],
    }


def test_reoptimize_proposes_the_best_parameters_pending_approval(lab: Lab) -> None:
    for i, symbol in enumerate(lab.settings.pipeline_symbols):
        lab.lake.write_bars(bars(symbol, 3 * 1440, i, calm_then_wild=i == 0))
    done = reoptimize(lab, now=NOW, strategies=("sma_cross",))
    assert [d.strategy for d in done] == ["sma_cross"]
    proposal = done[0].proposal
    assert proposal.key == "strategy_params.sma_cross" and proposal.status == "pending"
    assert set(proposal.new_value) == {"fast", "slow", "allow_short"}
    assert proposal.new_value["fast"] in (5, 10, 15) and proposal.new_value["slow"] in (25, 50, 75)
    assert "high momentum" in proposal.reason and "sweep run" in proposal.reason
    assert lab.records.get_config("strategy_params.sma_cross") is None  # not before approval
    runs = lab.research.runs(kind="sweep")
    assert len(runs) == 1
    assert done[0].announcement.action == "config.proposed"


def test_the_weekly_timer_runs_once_across_agent_processes(lab: Lab) -> None:
    first = Agent(ServiceContext(lab=lab, settings=lab.settings, instance="a"))
    second = Agent(ServiceContext(lab=lab, settings=lab.settings, instance="b"))
    assert first.reoptimize() == []  # an empty lake: nothing to sweep, but the week is claimed
    for i, symbol in enumerate(lab.settings.pipeline_symbols):
        lab.lake.write_bars(bars(symbol, 3 * 1440, i))
    assert second.reoptimize() == []  # bars now, but the week's run is taken
    assert lab.records.config_proposals() == []
    lab.flags.dedup.release_claim("agent.reoptimize")  # as a week later
    announced = second.reoptimize()
    assert announced and all(m.payload.action == "config.proposed" for m in announced)
    assert len(lab.records.config_proposals(status="pending")) == len(announced)
