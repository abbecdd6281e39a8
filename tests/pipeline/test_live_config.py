"""Running services follow the live system config without a restart (records on PostgreSQL and on
SQLite, the machine's Redis): the modifier's confidence threshold and hero signals, Feasibility's
active profile, the Signal Engine's re-optimised parameters and promoted strategies (a promotion
whose code changed refused on `audit` and `risk_events`); each change taken into use is audited
once per service and version; `tradeos-lab promote RUN_ID` makes the pipeline's engine trade
the run, its signals and intents carrying the run id down to the fills."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner
from end_to_end_support import (
    STRATEGY_REF,
    FlipFlop,
    pipeline_settings_for,
    running_pipeline,
    stream_messages,
    wait_for,
    wait_until_settled,
    zigzag_bar,
    zigzag_file,
)

from tradeos_lab import strategies as st
from tradeos_lab.agent.config import CONFIG_APPLIED, announcement
from tradeos_lab.agent.policy import propose
from tradeos_lab.cli import cli
from tradeos_lab.contracts import (
    Audit,
    AuditMessage,
    Bar,
    FillMessage,
    Intent,
    IntentMessage,
    Message,
    ModifiedSignal,
    RawSignal,
    RawSignalMessage,
    RiskEvent,
    new_message,
    new_message_id,
)
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.audit_trail import AuditTrail
from tradeos_lab.pipeline.services.feasibility import Feasibility
from tradeos_lab.pipeline.services.signal_engine import (
    PROMOTED_KEY,
    SignalEngine,
    params_key,
)
from tradeos_lab.pipeline.services.signal_modifier import (
    ACTIVE_PROFILE_KEY,
    CONFIDENCE_THRESHOLD_KEY,
    HERO_SIGNALS_KEY,
    SignalModifier,
)
from tradeos_lab.pipeline.supervisor import settings_environment
from tradeos_lab.providers import SyntheticProvider
from tradeos_lab.strategies.base import strategy_hash

ROOT = Path(__file__).resolve().parents[2]
PRICE = 50_000.0
#: A Wednesday afternoon in New York (every market open).
WEEKDAY_OPEN = datetime(2026, 12, 2, 16, 0, tzinfo=UTC).timestamp()
TS = datetime(2026, 12, 2, 15, 59, tzinfo=UTC)


@pytest.fixture
def lab(armed_lab: Lab) -> Lab:
    """The machine's Redis; records on PostgreSQL and on SQLite; a price for BTC-USD."""
    armed_lab.cache.set_price("BTC-USD", PRICE)
    return armed_lab


def _apply(lab: Lab, key: str, value: Any) -> Message:
    """Propose `key` = `value`, approve it as an operator; the `config.changed` announcement."""
    proposal, _ = propose(lab.records, key, value, reason=f"test: {key}")
    decided = lab.records.decide_config(
        proposal.id, approve=True, decided_by="user:ops", reason="approved"
    )
    return new_message(announcement(lab.records, decided, actor="user:ops"), producer="operator")


def _applied(outputs: list[Message]) -> list[Audit]:
    return [
        m.payload
        for m in outputs
        if isinstance(m.payload, Audit) and m.payload.action == CONFIG_APPLIED
    ]


def _raw(strategy: str, *, confidence: float = 0.8, strength: float = 0.4) -> Message:
    return new_message(
        RawSignal(
            strategy=strategy,
            symbol="BTC-USD",
            timeframe="1m",
            ts=TS,
            direction="long" if strength > 0 else "short",
            strength=strength,
            confidence=confidence,
            features={},
            source_message_id=new_message_id(),
        ),
        producer="signal_engine",
    )


def _modified_signal(strategy: str, strength: float = 0.5) -> Message:
    return new_message(
        ModifiedSignal(
            raw_signal_id=new_message_id(),
            strategy=strategy,
            symbol="BTC-USD",
            timeframe="1m",
            ts=TS,
            direction="long",
            raw_strength=strength,
            adjusted_strength=strength,
            confidence=0.9,
            modifiers=[],
        ),
        producer="signal_modifier",
    )


def _kept(outputs: list[Message]) -> tuple[list[str], list[str]]:
    """The strategies of the modified signals and those filtered out, in order."""
    passed = [m.payload.strategy for m in outputs if isinstance(m.payload, ModifiedSignal)]
    filtered = [
        m.payload.target.removeprefix("strategy:")
        for m in outputs
        if isinstance(m.payload, Audit) and m.payload.action == "signal.filtered"
    ]
    return passed, filtered


# ---- Signal Modifier ------------------------------------------------------------------------


def test_the_modifier_follows_the_confidence_threshold_and_hero_signals_without_a_restart(
    lab: Lab,
) -> None:
    modifier = SignalModifier(ServiceContext(lab, lab.settings, "t"))
    assert _kept(list(modifier.handle(_raw("sma_cross")))) == (["sma_cross"], [])

    modifier.config.note(_apply(lab, CONFIDENCE_THRESHOLD_KEY, 0.9))
    out = list(modifier.handle(_raw("sma_cross")))
    emitted = list(out)
    assert _kept(out) == ([], ["sma_cross"])
    [applied] = _applied(out)
    assert applied.target == f"config:{CONFIDENCE_THRESHOLD_KEY}"
    assert applied.new_value == {
        "key": CONFIDENCE_THRESHOLD_KEY,
        "value": 0.9,
        "version": lab.records.config_version(),
    }
    assert _kept(list(modifier.handle(_raw("sma_cross", confidence=0.95)))) == (["sma_cross"], [])

    modifier.config.note(_apply(lab, HERO_SIGNALS_KEY, ["rsi_reversion"]))
    batch = modifier.handle_batch([_raw("sma_cross", confidence=1.0), _raw("rsi_reversion")])
    out = [m for outputs in batch for m in outputs]
    emitted += out
    assert _kept(out) == ([], ["sma_cross", "rsi_reversion"])  # not a hero; then too unsure
    assert [a.target for a in _applied(out)] == [f"config:{HERO_SIGNALS_KEY}"]
    later = list(modifier.handle(_raw("rsi_reversion", confidence=0.95)))
    assert _kept(later) == (["rsi_reversion"], []) and _applied(later) == []  # once per version
    # the audit trail keeps what the modifier emits (it writes no records itself)
    AuditTrail(ServiceContext(lab, lab.settings, "t")).handle_batch(
        [m for m in emitted if isinstance(m, AuditMessage)]
    )
    kept = [r.action for r in lab.records.audit_trail() if r.producer == SignalModifier.name]
    assert kept.count(CONFIG_APPLIED) == 2


# ---- Feasibility ----------------------------------------------------------------------------


def test_switching_the_active_profile_resizes_the_next_intent_and_records_its_version(
    lab: Lab,
) -> None:
    ctx = ServiceContext(lab, lab.settings, "t", clock=lambda: WEEKDAY_OPEN)
    feasibility = Feasibility(ctx)
    [balanced] = [
        m.payload
        for m in feasibility.handle(_modified_signal("sma_cross"))
        if isinstance(m.payload, Intent)
    ]
    assert balanced.quantity == pytest.approx(0.5 * 0.10 * 100_000 / PRICE)
    assert balanced.policy_profile.startswith("Balanced@")

    feasibility.config.note(_apply(lab, ACTIVE_PROFILE_KEY, "Conservative"))
    out = list(feasibility.handle(_modified_signal("rsi_reversion")))
    [conservative] = [m.payload for m in out if isinstance(m.payload, Intent)]
    profile = lab.records.profile("Conservative")
    assert conservative.quantity == pytest.approx(
        0.5 * profile.max_position_pct / 100 * 100_000 / PRICE
    )
    assert conservative.policy_profile == (
        f"Conservative@{profile.updated_at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"
    )
    [applied] = _applied(out)
    assert applied.target == f"config:{ACTIVE_PROFILE_KEY}" and "Conservative@" in applied.reason
    [row] = [r for r in lab.records.intents() if r.strategy == "rsi_reversion"]
    assert row.payload["policy_profile"] == conservative.policy_profile
    assert _applied(list(feasibility.handle(_modified_signal("macd_trend")))) == []


# ---- Signal Engine --------------------------------------------------------------------------


@pytest.fixture
def bars() -> pd.DataFrame:
    return SyntheticProvider(seed=11, gap_rate=0.0, outage_rate=0.0).fetch_bars(
        "BTC-USD", "1m", "2024-05-01T00:00Z", "2024-05-01T08:00Z"
    )


def _bar(row: dict[str, Any]) -> Message:
    fields = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
    return new_message(Bar(source="synthetic", **{k: row[k] for k in fields}), producer="ingestion")


def _engine(lab: Lab, *strategies: str) -> SignalEngine:
    settings = lab.settings.model_copy(update={"pipeline_strategies": strategies})
    return SignalEngine(ServiceContext(lab, settings, "t"))


def _strengths(strategy: st.Strategy[Any], bars: pd.DataFrame) -> dict[pd.Timestamp, float]:
    batch = strategy.signals(bars)
    return {
        pd.Timestamp(row["ts"]): row["strength"]
        for row in batch.to_dict("records")
        if not math.isnan(row["strength"])
    }


def test_reoptimized_parameters_change_the_engines_signals_from_the_next_bar(
    lab: Lab, bars: pd.DataFrame
) -> None:
    lab.cache.write_bars(bars)  # what ingestion cached as the bars came
    engine = _engine(lab, "sma_cross")
    rows = bars.to_dict("records")
    half = len(rows) // 2
    before = [o for row in rows[200:half] for o in engine.handle(_bar(row))]
    tuned = {"fast": 5, "slow": 20, "allow_short": True}
    engine.config.note(_apply(lab, params_key("sma_cross"), tuned))
    after = [o for row in rows[half:] for o in engine.handle(_bar(row))]

    def got(outputs: list[Message]) -> dict[pd.Timestamp, float]:
        return {
            pd.Timestamp(m.payload.ts): m.payload.strength
            for m in outputs
            if isinstance(m.payload, RawSignal)
        }

    start = pd.Timestamp(rows[half]["ts"])
    default, reoptimized = _strengths(st.SmaCross(), bars), _strengths(st.SmaCross(**tuned), bars)
    assert got(before) == {
        t: v for t, v in default.items() if pd.Timestamp(rows[200]["ts"]) <= t < start
    }
    expected = {t: v for t, v in reoptimized.items() if t >= start}
    assert expected != {t: v for t, v in default.items() if t >= start}, "the test proves nothing"
    assert got(after) == pytest.approx(expected)
    [applied] = _applied(after)
    assert applied.target == f"config:{params_key('sma_cross')}" and "fast=5" in applied.reason


def _entry(cls: type[st.Strategy[Any]], run_id: uuid.UUID, **overrides: Any) -> dict[str, Any]:
    return {
        "run_id": str(run_id),
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "parameters": cls().params.model_dump(mode="json"),
        "strategy_hash": strategy_hash(cls),
        **overrides,
    }


def test_a_promoted_strategy_runs_beside_the_configured_ones_and_a_changed_one_is_refused(
    lab: Lab, bars: pd.DataFrame
) -> None:
    lab.cache.write_bars(bars)
    engine = _engine(lab, "sma_cross")
    rows = bars.to_dict("records")
    first = list(engine.handle(_bar(rows[200])))
    assert _applied(first) == []  # the config it starts under is not a change
    run = uuid.uuid4()
    promoted = {
        "rsi_reversion": _entry(st.RsiReversion, run, parameters={"period": 9}),
        "macd_trend": _entry(st.MacdTrend, uuid.uuid4(), strategy_hash="0" * 64),
    }
    engine.config.note(_apply(lab, PROMOTED_KEY, promoted))
    out = [o for row in rows[201:] for o in engine.handle(_bar(row))]
    signals = [m.payload for m in out if isinstance(m.payload, RawSignal)]
    rsi = [s for s in signals if s.strategy == "rsi_reversion"]
    assert rsi, "no signal: the test proves nothing"
    assert {s.run_id for s in rsi} == {run}
    assert {s.run_id for s in signals if s.strategy == "sma_cross"} == {None}
    assert "macd_trend" not in {s.strategy for s in signals}
    expected = _strengths(st.RsiReversion(period=9), bars)
    assert {pd.Timestamp(s.ts): s.strength for s in rsi} == pytest.approx(
        {t: v for t, v in expected.items() if t > pd.Timestamp(rows[200]["ts"])}
    )
    [refused] = [
        m.payload
        for m in out
        if isinstance(m.payload, Audit) and m.payload.action == "config.refused"
    ]
    assert refused.target == f"config:{PROMOTED_KEY}.macd_trend" and "changed" in refused.reason
    [event] = [m.payload for m in out if isinstance(m.payload, RiskEvent)]
    assert event.scope == f"config:{PROMOTED_KEY}.macd_trend"


# ---- while the services run ---------------------------------------------------------------


def test_a_hero_signals_change_reaches_the_running_pipeline_without_a_restart(
    lab: Lab, tmp_path: Path
) -> None:
    settings = pipeline_settings_for(lab.settings, tmp_path / "unused.csv")
    published = iter(range(10_000))

    def publish_bar() -> None:
        lab.bus.publish(Stream.MARKET_DATA, zigzag_bar(next(published)))

    def outcomes() -> tuple[list[str], list[str]]:
        return _kept(
            stream_messages(lab, Stream.SIGNALS_MODIFIED) + stream_messages(lab, Stream.AUDIT)
        )

    with running_pipeline(lab, settings, ["signal_engine", "signal_modifier"]):
        for _ in range(3):
            publish_bar()
        wait_for(lambda: outcomes()[0], what="a modified flip_flop signal")
        _apply(lab, HERO_SIGNALS_KEY, ["sma_cross"])  # not announced: the services poll

        def filtered() -> bool:
            publish_bar()
            return bool(outcomes()[1])

        wait_for(filtered, timeout=30, every=0.2, what="flip_flop filtered as not a hero")
    applied = [
        m.payload
        for m in stream_messages(lab, Stream.AUDIT)
        if isinstance(m.payload, Audit) and m.payload.action == CONFIG_APPLIED
    ]
    assert [(a.actor, a.target) for a in applied] == [
        ("service:signal_modifier", f"config:{HERO_SIGNALS_KEY}")
    ]
    assert set(outcomes()[1]) == {"flip_flop"}


def test_a_run_promoted_from_the_cli_trades_in_the_pipeline_down_to_its_fills(
    lab: Lab, tmp_path: Path
) -> None:
    bars = pd.DataFrame([zigzag_bar(i).payload.model_dump() for i in range(40)])
    st.register(FlipFlop)
    try:
        run_id = lab.research.backtest(FlipFlop(), bars).run_id
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

        count = 30
        pipeline = pipeline_settings_for(settings, zigzag_file(tmp_path / "bars.csv", count))
        assert pipeline.pipeline_strategies == (STRATEGY_REF,)  # the same strategy, by path
        with running_pipeline(lab, pipeline):
            wait_until_settled(lab, bars=count)
    finally:
        st.unregister(FlipFlop.name)
    raws = [m for m in stream_messages(lab, Stream.SIGNALS_RAW) if isinstance(m, RawSignalMessage)]
    assert raws and {m.payload.run_id for m in raws} == {run_id}
    assert {m.payload.strategy for m in raws} == {"flip_flop"}  # replaced, not run twice
    by_id = {m.message_id: m for s in Stream for m in stream_messages(lab, s)}
    intents = [m for m in by_id.values() if isinstance(m, IntentMessage)]
    fills = [m for m in by_id.values() if isinstance(m, FillMessage)]
    assert intents and fills
    for fill in fills:  # each fill leads back to a raw signal of the promoted run
        message: Message = fill
        while not isinstance(message, RawSignalMessage):
            assert message.causation_id is not None
            message = by_id[message.causation_id]
        assert message.payload.run_id == run_id
    # The records lead from each kept intent, through its modified signal, to the run's signal.
    promoted = {m.message_id for m in raws}
    rows = lab.records.intents()
    assert rows
    modified = lab.records.signal_rows_of(r.signal_id for r in rows if r.signal_id is not None)
    assert len(modified) == len(rows)
    assert {m.payload["raw_signal_id"] in promoted for m in modified.values()} == {True}


def test_a_signal_engine_process_trades_the_promoted_run_from_its_start(
    pipeline_lab: Lab, bars: pd.DataFrame, tmp_path: Path
) -> None:
    """`tradeos-lab service signal_engine`, as `up` starts it, loads the promotions at start
    without importing the research stack."""
    lab = pipeline_lab
    tested = st.SmaCross(fast=5, slow=20)
    promotion = lab.research.promote(lab.research.backtest(tested, bars).run_id, actor="user:ci")
    settings = lab.settings.model_copy(update={"pipeline_strategies": ("rsi_reversion",)})
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEOS_")}
    env |= {"PYTHONPATH": str(ROOT), **settings_environment(settings)}
    entry = (
        "import sys; from tradeos_lab.cli import main; "
        "import tradeos_lab.pipeline.services.signal_engine; "
        "assert 'vectorbt' not in sys.modules and 'tradeos_lab.research' not in sys.modules; "
        "main(sys.argv[1:])"
    )
    log = (tmp_path / "engine.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", entry, "service", "signal_engine"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        for row in bars.to_dict("records"):
            lab.bus.publish(Stream.MARKET_DATA, _bar(row))

        def promoted_signals() -> list[RawSignal]:
            assert process.poll() is None, (tmp_path / "engine.log").read_text()
            return [
                m.payload
                for m in stream_messages(lab, Stream.SIGNALS_RAW)
                if isinstance(m.payload, RawSignal) and m.payload.strategy == "sma_cross"
            ]

        signals = wait_for(promoted_signals, timeout=90, every=0.5, what="sma_cross signals")
    finally:
        process.terminate()
        process.wait(60)
    assert {s.run_id for s in signals} == {promotion.run_id}
    expected = _strengths(tested, bars)
    assert {pd.Timestamp(s.ts): s.strength for s in signals} == pytest.approx(
        {t: v for t, v in expected.items() if t <= max(pd.Timestamp(s.ts) for s in signals)}
    )
