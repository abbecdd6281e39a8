"""Promotion: a backtest run's strategy recorded for the pipeline's Signal Engine, or refused."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from tradeos_lab import strategies as st
from tradeos_lab.cli import cli
from tradeos_lab.contracts import AuditMessage
from tradeos_lab.errors import ValidationError
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.research import backtest
from tradeos_lab.research.promote import PROMOTED_KEY, KernelOnlyPromotionWarning, promotable
from tradeos_lab.research.sweep import sweep
from tradeos_lab.stores.records import RecordsStore


@pytest.fixture
def lab(armed_server_lab: Lab) -> Lab:
    return armed_server_lab


def _audits(lab: Lab) -> list[AuditMessage]:
    bus = lab.bus
    entries = bus.redis.xrange(bus.stream_key(Stream.AUDIT), "-", "+")
    messages = [bus.decode(Stream.AUDIT, fields) for _, fields in entries]
    return [m for m in messages if isinstance(m, AuditMessage)]


def test_promote_records_the_run_and_why_for_the_pipeline_and_deploys_nothing_itself(
    lab: Lab, one_symbol: pd.DataFrame
) -> None:
    tested = st.SmaCross(fast=7, slow=30)
    run_id = lab.research.backtest(tested, one_symbol).run_id

    promotion = lab.research.promote(run_id, reason="best out of sample", actor="user:quant")

    assert promotion.run_id == run_id
    assert promotion.strategy == tested
    assert not lab.pipeline.deployments, "the pipeline's engine trades it: it must not run twice"
    entry = lab.research.promoted()["sma_cross"]
    assert entry["run_id"] == str(run_id)
    assert entry["parameters"] == {"fast": 7, "slow": 30, "allow_short": True}
    (change,) = lab.records.config_history(PROMOTED_KEY)
    assert (change.changed_by, change.reason) == ("user:quant", "best out of sample")
    (audit,) = [a for a in _audits(lab) if a.payload.action == "strategy.promote"]
    assert audit.payload.target == "strategy:sma_cross"
    assert audit.payload.new_value == entry


def test_a_second_promotion_replaces_the_first_and_keeps_its_history(
    lab: Lab, one_symbol: pd.DataFrame
) -> None:
    first = lab.research.backtest(st.SmaCross(fast=5, slow=20), one_symbol).run_id
    second = lab.research.backtest(st.SmaCross(fast=8, slow=40), one_symbol).run_id
    lab.research.promote(first)
    lab.research.promote(second)
    assert lab.research.promoted()["sma_cross"]["run_id"] == str(second)
    assert [
        c.new_value["sma_cross"]["run_id"] for c in lab.records.config_history(PROMOTED_KEY)
    ] == [
        str(first),
        str(second),
    ]
    assert not lab.pipeline.deployments


def test_only_a_finished_backtest_of_the_current_code_is_promoted(
    records: RecordsStore, one_symbol: pd.DataFrame
) -> None:
    swept = sweep(st.SmaCross, one_symbol, fast=[5, 8], slow=[30], records=records)
    with pytest.raises(ValidationError, match="is a sweep"):
        promotable(records, swept.run_id)
    with pytest.raises(ValidationError, match="not a run id"):
        promotable(records, "latest")

    class Drifting(st.Strategy[st.StrategyParams]):
        name = "drifting_rule"
        lookback = 2

        def indicators(self) -> tuple[()]:
            return ()

        def rule(self, values: Any) -> Any:
            return st.choose(values["close"] > st.previous(values["close"]))

    st.register(Drifting)
    try:
        run_id = backtest(Drifting(), one_symbol, records=records).run_id
        assert promotable(records, run_id).strategy == Drifting()

        class DriftingEdited(st.Strategy[st.StrategyParams]):  # the rule edited in a notebook
            name = "drifting_rule"
            lookback = 2

            def indicators(self) -> tuple[()]:
                return ()

            def rule(self, values: Any) -> Any:
                return st.choose(values["close"] < st.previous(values["close"]))

        st.register(DriftingEdited, replace=True)
        with pytest.raises(ValidationError, match="changed since run"):
            promotable(records, run_id)
    finally:
        st.unregister("drifting_rule")


def test_promoting_a_strategy_defined_in_a_notebook_says_only_its_kernel_can_run_it(
    lab: Lab, one_symbol: pd.DataFrame
) -> None:
    class NotebookRule(st.Strategy[st.StrategyParams]):
        name = "notebook_rule"
        lookback = 2

        def indicators(self) -> tuple[()]:
            return ()

        def rule(self, values: Any) -> Any:
            return st.choose(values["close"] > st.previous(values["close"]))

    NotebookRule.__module__ = "__main__"  # as a class written in a notebook cell is
    st.register(NotebookRule)
    try:
        run_id = lab.research.backtest(NotebookRule(), one_symbol).run_id
        with pytest.warns(KernelOnlyPromotionWarning, match=r"lab\.pipeline\.start\(\)"):
            lab.research.promote(run_id)
        assert lab.research.promoted()["notebook_rule"]["class"].startswith("__main__:")
        # a module's strategy warns of nothing
        other = lab.research.backtest(st.SmaCross(fast=5, slow=20), one_symbol).run_id
        with warnings.catch_warnings():
            warnings.simplefilter("error", KernelOnlyPromotionWarning)
            lab.research.promote(other)
    finally:
        st.unregister("notebook_rule")


def test_the_cli_records_a_promotion_for_the_stack(
    lab: Lab, one_symbol: pd.DataFrame, tmp_path: Path
) -> None:
    run_id = lab.research.backtest(st.RsiReversion(period=9), one_symbol).run_id
    settings = lab.settings
    assert settings.records_url is not None and settings.bus_url is not None
    env = {
        "TRADEOS_RECORDS_URL": settings.records_url.get_secret_value(),
        "TRADEOS_BUS_URL": settings.bus_url.get_secret_value(),
        "TRADEOS_NAMESPACE": settings.namespace,
        "TRADEOS_DATA_DIR": str(tmp_path / "cli"),
    }
    result = CliRunner().invoke(cli, ["promote", str(run_id), "--actor", "user:ci"], env=env)
    assert result.exit_code == 0, result.output
    assert re.search(rf"from run {run_id}", result.output)
    assert lab.research.promoted()["rsi_reversion"]["run_id"] == str(run_id)
    assert lab.records.config_history(PROMOTED_KEY)[-1].changed_by == "user:ci"
    assert not lab.pipeline.deployments


def test_a_promoted_strategys_signals_carry_the_run_they_came_from(
    lab: Lab, one_symbol: pd.DataFrame
) -> None:
    """The records link each intent and trade, through its raw signal, to the backtest run."""
    from tradeos_lab.contracts import Bar, RawSignal, new_message
    from tradeos_lab.pipeline import ServiceContext
    from tradeos_lab.pipeline.services.signal_engine import SignalEngine

    tested = st.SmaCross(fast=3, slow=8)
    run_id = lab.research.backtest(tested, one_symbol).run_id
    lab.research.promote(run_id, reason="carry the run id")
    # The pipeline's engine, as `up` or `lab.pipeline.start()` runs it, trades the promotion.
    engine = SignalEngine(ServiceContext(lab, lab.settings, instance="t"))
    fields = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
    signals = [
        m.payload
        for row in one_symbol.head(120).to_dict("records")
        for m in engine.handle(
            new_message(Bar(source="test", **{k: row[k] for k in fields}), producer="ingestion")
        )
        if isinstance(m.payload, RawSignal) and m.payload.strategy == tested.name
    ]
    assert signals, "no signal: the test proves nothing"
    assert {s.run_id for s in signals} == {run_id}
    assert lab.pipeline.deploy(tested).service.run_id is None  # deployed, not promoted
