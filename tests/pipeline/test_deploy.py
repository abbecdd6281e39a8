"""A strategy deployed from a notebook: its own Signal Engine worker in this process, on the
machine's Redis, signalling on the bars published while it runs, visible in the worker registry,
stopped cleanly; bad strategies are a clear error."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from tradeos_lab.contracts import Bar, Message, new_message
from tradeos_lab.errors import ValidationError
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.providers import SyntheticProvider
from tradeos_lab.strategies import SmaCross, unregister

HISTORY = 100
WAIT_S = 30.0  # a bound on waiting for the worker thread, never a speed claim


class NotebookCross(SmaCross):
    """A strategy a notebook defines: a fast crossover that signals often."""

    name = "notebook_cross"


@pytest.fixture
def bars() -> pd.DataFrame:
    return SyntheticProvider(seed=5, gap_rate=0.0, outage_rate=0.0).fetch_bars(
        "ETH-USD", "1m", "2024-06-01T00:00Z", "2024-06-01T03:00Z"
    )


@pytest.fixture(autouse=True)
def _forget_notebook_strategy() -> Iterator[None]:
    yield
    with contextlib.suppress(ValidationError):  # a test that never deployed it
        unregister(NotebookCross.name)


def _messages(bars: pd.DataFrame) -> list[Message]:
    fields = ["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]
    return [
        new_message(Bar(**{k: row[k] for k in fields}, source="synthetic"), producer="ingestion")
        for row in bars.to_dict("records")
    ]


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {WAIT_S}s")
        time.sleep(0.05)


def _signals_of(lab: Lab, producer: str) -> pd.DataFrame:
    raw = lab.bus.inspect.read(Stream.SIGNALS_RAW, count=None)
    if raw.empty:
        return raw
    return raw[raw["producer"] == producer]


def test_a_deployed_strategy_signals_on_the_running_stream_and_stops_cleanly(
    pipeline_lab: Lab, bars: pd.DataFrame
) -> None:
    lab = pipeline_lab
    strategy = NotebookCross(fast=3, slow=8)
    lab.cache.write_bars(bars.iloc[:HISTORY])  # what ingestion cached before
    before = _messages(bars.iloc[HISTORY - 5 : HISTORY])
    lab.bus.publish_many(Stream.MARKET_DATA, before)  # published before the deployment

    handle = lab.pipeline.deploy(strategy)
    assert handle.name == "signal_engine.notebook_cross"
    assert handle.running
    assert handle.health_url is not None
    assert handle.health_url.startswith("http://127.0.0.1:")
    _wait_for(lambda: any(w.service == handle.name for w in lab.flags.workers.live_workers()))

    live = _messages(bars.iloc[HISTORY:])
    lab.bus.publish_many(Stream.MARKET_DATA, live)
    expected = strategy.signals(bars).iloc[HISTORY:]
    expected = expected[[not math.isnan(s) for s in expected["strength"]]]
    assert len(expected) > 0, "no signal on the test bars: the test proves nothing"
    _wait_for(lambda: len(_signals_of(lab, handle.name)) >= len(expected))

    signals = _signals_of(lab, handle.name)
    assert list(pd.to_datetime(signals["payload.ts"], utc=True)) == list(expected["ts"])
    assert list(signals["payload.strength"]) == pytest.approx(list(expected["strength"]))
    causes = {m.message_id for m in live}
    assert set(signals["causation_id"]) <= causes  # never an answer to the earlier bars

    handle.stop()
    assert not handle.running
    assert all(w.service != handle.name for w in lab.flags.workers.live_workers())
    groups = lab.bus.inspect.groups(Stream.MARKET_DATA)
    row = groups[groups["group"] == handle.name].iloc[0]
    assert int(row["pending"]) == 0  # the batch in hand was acked before stopping


def test_deploying_again_replaces_the_running_worker(pipeline_lab: Lab) -> None:
    first = pipeline_lab.pipeline.deploy(NotebookCross)
    second = pipeline_lab.pipeline.deploy(NotebookCross(fast=4, slow=9))
    try:
        assert not first.running
        assert second.running
        assert list(pipeline_lab.pipeline.deployments) == ["signal_engine.notebook_cross"]
    finally:
        pipeline_lab.pipeline.stop()
    assert not second.running


def test_unknown_or_bad_strategies_are_clear_errors(pipeline_lab: Lab) -> None:
    with pytest.raises(ValidationError, match="unknown strategy 'no_such_strategy'"):
        pipeline_lab.pipeline.deploy("no_such_strategy")
    with pytest.raises(ValidationError, match="deploy takes a Strategy"):
        pipeline_lab.pipeline.deploy(42)  # type: ignore[arg-type]
    assert pipeline_lab.pipeline.deployments == {}


KERNEL = """
import sys, time, warnings
import tradeos_lab as tl
from tradeos_lab.settings import load_settings

namespace, base, tmp = sys.argv[1:4]
warnings.simplefilter("ignore")  # one Redis server for the three tiers in this test
settings = load_settings(
    namespace=namespace, bus_url=f"{base}/0", cache_url=f"{base}/1", flags_url=f"{base}/2",
    records_url=f"sqlite:///{tmp}/records.db", lake_url=f"chdb://{tmp}/lake", data_dir=tmp,
)
lab = tl.connect(settings, start=False)
handle = lab.pipeline.deploy("sma_cross")
while not any(w.service == handle.name for w in lab.flags.workers.live_workers()):
    time.sleep(0.05)
print("deployed", handle.name, flush=True)
# the kernel exits without stopping the deployment
"""


def test_a_deployment_stops_when_its_kernel_exits(
    pipeline_lab: Lab, namespace: str, shared_redis_url: str, tmp_path: Path
) -> None:
    base = shared_redis_url.rsplit("/", 1)[0]
    kernel = subprocess.run(
        [sys.executable, "-c", KERNEL, namespace, base, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=WAIT_S * 4,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert kernel.returncode == 0, kernel.stderr
    assert "deployed signal_engine.sma_cross" in kernel.stdout
    # It left the worker registry on the way out: stopped, not abandoned.
    assert all(
        w.service != "signal_engine.sma_cross"
        for w in pipeline_lab.flags.workers.live_workers()
        + pipeline_lab.flags.workers.stale_workers()
    )


def test_start_runs_the_chosen_services_in_this_kernel_and_close_stops_them(
    pipeline_lab: Lab,
) -> None:
    lab = pipeline_lab
    running = lab.pipeline.start(
        ["positions", "Signal_Modifier", "feasibility"], without=["FEASIBILITY"]
    )
    assert list(running) == ["signal_modifier", "positions"]  # pipeline order, less `without`
    assert all(s.alive for s in running.values())
    _wait_for(
        lambda: (
            {"signal_modifier", "positions"}
            <= {w.service for w in lab.flags.workers.live_workers()}
        )
    )
    again = lab.pipeline.start(["positions"])
    assert again["positions"] is running["positions"], "a running service is left running"
    assert "services: signal_modifier, positions" in repr(lab.pipeline)

    lab.close()
    assert not any(s.alive for s in running.values())
    assert lab.pipeline.services == {}


def test_start_refuses_unknown_services_and_starts_nothing(pipeline_lab: Lab) -> None:
    with pytest.raises(ValidationError, match="no pipeline service named 'brokerage'"):
        pipeline_lab.pipeline.start(["positions", "brokerage"])
    with pytest.raises(ValidationError, match="not one string"):
        pipeline_lab.pipeline.start("positions")
    assert pipeline_lab.pipeline.services == {}
