"""Ingestion and the Signal Engine under the shared runner, on the machine's Redis: bars from the
synthetic feed become signals of a strategy given as `path.py:Class`, equal to its batch form over
the same bars, each message once, with the chain's ids carried over."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.runner import ServiceRunner
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.ingestion import Ingestion
from tradeos_lab.pipeline.services.signal_engine import SignalEngine
from tradeos_lab.strategies import get_strategy

STRATEGY_FILE = '''
from tradeos_lab.strategies import SmaCross, SmaCrossParams


class FileCrossParams(SmaCrossParams):
    fast: int = 2
    slow: int = 5


class FileCross(SmaCross):
    """A strategy kept in a file of its own and run by reference: a fast crossover."""

    name = "file_cross"
    params_type = FileCrossParams
'''
POLLS = 40


def test_strategy_in_a_file_signals_on_ingested_bars_like_its_batch_form(
    pipeline_lab: Lab, tmp_path: Path
) -> None:
    path = tmp_path / "my_strategies.py"
    path.write_text(STRATEGY_FILE)
    ref = f"{path}:FileCross"
    settings = pipeline_lab.settings.model_copy(
        update={"pipeline_symbols": ("BTC-USD",), "pipeline_strategies": (ref,)}
    )
    ingestion = ServiceRunner(Ingestion, ServiceContext(pipeline_lab, settings, "ingest-1"))
    engine = ServiceRunner(SignalEngine, ServiceContext(pipeline_lab, settings, "engine-1"))
    for _ in range(POLLS):
        ingestion.fire_timers()
    assert engine.drain().handled == POLLS
    assert engine.drain().handled == 0  # every bar acked once

    inspect = pipeline_lab.bus.inspect
    bars = inspect.read(Stream.MARKET_DATA, count=None)
    signals = inspect.read(Stream.SIGNALS_RAW, count=None)
    audits = inspect.read(Stream.AUDIT, count=None)
    history = pipeline_lab.cache.get_bars("BTC-USD", "1m")
    strategy = get_strategy(ref)()
    batch = strategy.signals(history)
    live = batch[batch["ts"] >= pd.Timestamp(bars["payload.ts"].iloc[0])]
    expected = live[[not math.isnan(s) for s in live["strength"]]]
    assert len(expected) > 0, "no signal on these bars: the test proves nothing"

    assert list(pd.to_datetime(signals["payload.ts"], utc=True)) == list(expected["ts"])
    assert list(signals["payload.strength"]) == pytest.approx(list(expected["strength"]))
    assert set(signals["payload.strategy"]) == {"file_cross"}
    assert signals["message_id"].is_unique
    by_bar = dict(zip(bars["message_id"], bars["correlation_id"], strict=True))
    for cause, correlation in zip(signals["causation_id"], signals["correlation_id"], strict=True):
        assert by_bar[cause] == correlation  # the bar's chain carries on
    engine_audits = audits[audits["producer"] == "signal_engine"]
    assert len(engine_audits) == len(signals)
