"""Batch and live forms of every built-in give the same signal on every bar."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from tradeos_lab.contracts import (
    Bar,
    RawSignalMessage,
    decode,
    derive,
    encode,
    new_message,
    new_message_id,
)
from tradeos_lab.contracts.payloads import RawSignal
from tradeos_lab.errors import ValidationError
from tradeos_lab.indicators import ATR, BBands, Indicator
from tradeos_lab.providers import SyntheticProvider
from tradeos_lab.strategies import (
    Decision,
    FloatArray,
    LiveStrategy,
    MacdTrend,
    OpeningRangeBreakout,
    RsiReversion,
    SmaCross,
    Strategy,
    StrategyParams,
    Values,
    choose,
    crossed_above,
    crossed_below,
)
from tradeos_lab.strategies.live import warm_up


class BandBreakParams(StrategyParams):
    period: int = 20
    k: float = 2.0


class BandBreak(Strategy[BandBreakParams]):
    """A user's strategy: breaks out of Bollinger bands, confidence from the ATR-scaled distance
    (an array confidence, unlike the built-ins)."""

    name = "test_band_break"
    params_type = BandBreakParams
    lookback = 2

    def indicators(self) -> Sequence[Indicator]:
        return (BBands(self.params.period, self.params.k), ATR(14))

    def rule(self, values: Values) -> Decision | FloatArray:
        upper, middle, lower = BBands(self.params.period, self.params.k).outputs
        close, atr = values["close"], values["atr_14"]
        strength = choose(crossed_above(close, values[upper]), crossed_below(close, values[lower]))
        confidence = np.clip(np.abs(close - values[middle]) / (4 * atr), 0.0, 1.0)
        # no signal before the ATR is known: confidence would be NaN
        return Decision(strength=np.where(np.isnan(atr), np.nan, strength), confidence=confidence)


# Every built-in, with defaults and with a variant that changes which branch of its rule fires.
CASES: list[Strategy[Any]] = [
    SmaCross(),
    SmaCross(fast=5, slow=20, allow_short=False),
    RsiReversion(),
    RsiReversion(period=9, oversold=25, overbought=75, allow_short=False),
    MacdTrend(),
    MacdTrend(fast=8, slow=21, signal=5, allow_short=False),
    OpeningRangeBreakout(minutes=30, calendar="XNYS"),
    OpeningRangeBreakout(minutes=60, calendar="24/7", allow_short=False),
    BandBreak(),
]
IDS = [repr(s) for s in CASES]


def live_signals(
    strategy: Strategy[Any], bars: pd.DataFrame, restart_at: int | None = None
) -> list[RawSignal | None]:
    """Feed `bars` one at a time; with `restart_at`, rebuild the live form from its saved state
    there, as a restarted Signal Engine would."""
    symbol, timeframe = bars["symbol"].iloc[0], bars["timeframe"].iloc[0]
    live = strategy.live(symbol, timeframe)
    out: list[RawSignal | None] = []
    for i, bar in enumerate(
        bars[["ts", "open", "high", "low", "close", "volume"]].to_dict("records")
    ):
        if i == restart_at:
            live = LiveStrategy.from_dict(json.loads(json.dumps(live.to_dict())))
        out.append(live.update(bar, source_message_id=new_message_id()))
    return out


def assert_same_signals(batch: pd.DataFrame, live: list[RawSignal | None]) -> None:
    assert len(batch) == len(live)
    for row, signal in zip(batch.to_dict("records"), live, strict=True):
        ts, strength = row["ts"], row["strength"]
        if math.isnan(strength):
            assert signal is None, f"live gave a signal at {ts} where batch gave none"
            continue
        assert signal is not None, f"batch gave {strength} at {ts}, live gave none"
        assert signal.ts == ts.to_pydatetime()
        assert signal.strength == pytest.approx(strength, rel=1e-9, abs=1e-12)
        assert signal.confidence == pytest.approx(row["confidence"], rel=1e-9)
        assert np.sign(signal.strength) == row["direction"]
        assert signal.features == pytest.approx({k: row[k] for k in signal.features}, rel=1e-9)


@pytest.mark.parametrize("strategy", CASES, ids=IDS)
@pytest.mark.parametrize("data", ["sample_bars", "generated_bars"])
def test_live_gives_the_batch_signal_on_every_bar(
    strategy: Strategy[Any], data: str, request: pytest.FixtureRequest
) -> None:
    bars: pd.DataFrame = request.getfixturevalue(data)
    batch = strategy.signals(bars)
    assert_same_signals(batch, live_signals(strategy, bars))


@pytest.mark.parametrize("strategy", CASES, ids=IDS)
def test_every_builtin_signals_on_the_test_data(
    strategy: Strategy[Any], sample_bars: pd.DataFrame, generated_bars: pd.DataFrame
) -> None:
    """The parity test above would pass vacuously on data where a rule never fires."""
    strength = pd.concat([strategy.signals(b)["strength"] for b in (sample_bars, generated_bars)])
    assert (strength > 0).sum() >= 2
    if getattr(strategy.params, "allow_short", False):
        assert (strength < 0).sum() >= 2


@pytest.mark.parametrize("strategy", CASES[::2], ids=IDS[::2])
def test_live_resumes_from_saved_state_with_the_same_signals(
    strategy: Strategy[Any], generated_bars: pd.DataFrame
) -> None:
    batch = strategy.signals(generated_bars)
    live = live_signals(strategy, generated_bars, restart_at=len(generated_bars) // 2)
    assert_same_signals(batch, live)


def test_live_signal_carries_the_indicator_values_that_produced_it(
    generated_bars: pd.DataFrame,
) -> None:
    strategy = SmaCross(fast=5, slow=20)
    batch = strategy.signals(generated_bars)
    signals = [s for s in live_signals(strategy, generated_bars) if s is not None]
    first = signals[0]
    row = batch.loc[batch.ts == pd.Timestamp(first.ts)].iloc[0]
    assert set(first.features) == {"close", "sma_5", "sma_20"}
    assert first.features["sma_5"] == pytest.approx(row["sma_5"], rel=1e-9)
    assert first.strategy == "sma_cross"
    assert first.symbol == "BTC-USD"
    assert first.timeframe.value == "1m"


def test_a_bar_message_gives_a_signal_message_for_the_bus(generated_bars: pd.DataFrame) -> None:
    """The live form consumes `market_data` messages and its payload travels as `signals.raw`,
    pointing back at the bar message it came from."""
    strategy = SmaCross(fast=5, slow=20)
    live = strategy.live("BTC-USD", "1m")
    sent: list[RawSignalMessage] = []
    for row in generated_bars.iloc[:400].itertuples():
        bar = Bar(
            symbol="BTC-USD",
            timeframe="1m",
            ts=row.ts,
            open=row.open,
            high=row.high,
            low=row.low,
            close=row.close,
            volume=row.volume,
            source="synthetic",
        )
        message = new_message(bar, producer="test")
        signal = live.on_message(message)
        if signal is not None:
            assert signal.source_message_id == message.message_id
            sent.append(derive(message, signal, producer="signal_engine"))
    assert sent
    decoded = decode(encode(sent[0]))
    assert decoded.payload == sent[0].payload
    batch = strategy.signals(generated_bars.iloc[:400])
    assert len(sent) == int(batch["strength"].notna().sum())


def test_saved_state_of_other_parameters_is_refused(generated_bars: pd.DataFrame) -> None:
    live = SmaCross(fast=5, slow=20).live("BTC-USD", "1m")
    saved = live.to_dict()
    saved["indicators"] = SmaCross(fast=10, slow=50).live("BTC-USD", "1m").to_dict()["indicators"]
    with pytest.raises(ValidationError, match="saved indicator state has outputs"):
        LiveStrategy.from_dict(saved)
    del saved["window"]
    with pytest.raises(ValidationError, match="lacks 'window'"):
        LiveStrategy.from_dict(saved)


def test_a_strategy_without_a_name_cannot_go_live() -> None:
    unnamed = type("Unnamed", (BandBreak,), {"name": ""})()
    with pytest.raises(ValidationError, match="strategy name must be a non-empty string"):
        unnamed.live("BTC-USD", "1m")


SMALL = [
    SmaCross(fast=3, slow=8),
    RsiReversion(period=5, oversold=35, overbought=65),
    MacdTrend(fast=3, slow=8, signal=3),
    OpeningRangeBreakout(minutes=15, calendar="24/7"),
    BandBreak(period=8, k=1.5),
]


@settings(max_examples=15, deadline=None)
@given(
    seed=hst.integers(0, 2**31),
    start_minute=hst.integers(0, 60 * 24 * 365),
    gap_rate=hst.sampled_from([0.0, 0.05, 0.2]),
)
def test_live_gives_the_batch_signal_on_random_series(
    seed: int, start_minute: int, gap_rate: float
) -> None:
    start = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(minutes=start_minute)
    bars = SyntheticProvider(seed=seed, gap_rate=gap_rate).fetch_bars(
        "RND", "1m", start, start + pd.Timedelta(minutes=300)
    )
    for strategy in SMALL:
        assert_same_signals(strategy.signals(bars), live_signals(strategy, bars))


_KERNELS_LOADED = """
import sys
from tradeos_lab.strategies.builtins.sma_cross import SmaCross
from tradeos_lab.strategies.live import warm_up
from tradeos_lab.strategies.rules import _choose_nb, _crossings_nb
if sys.argv[1] == "warm":
    warm_up([SmaCross()], "1m")
print(len(_choose_nb.signatures), len(_crossings_nb.signatures))
"""


@pytest.mark.parametrize(("warm", "loaded"), [("warm", True), ("cold", False)])
def test_warm_up_loads_the_rule_kernels_a_live_strategy_uses(warm: str, loaded: bool) -> None:
    """In a fresh process, so nothing else has loaded them."""
    done = subprocess.run(
        [sys.executable, "-c", _KERNELS_LOADED, warm], capture_output=True, text=True, check=True
    )
    counts = [int(n) for n in done.stdout.split()]
    assert all(counts) if loaded else not any(counts), done.stdout


class _Broken(SmaCross):
    def rule(self, values: Values) -> Decision | FloatArray:
        raise RuntimeError("broken rule")


def test_warm_up_passes_over_a_strategy_that_fails_which_fails_on_its_first_bar() -> None:
    warm_up([_Broken(), SmaCross()], "1m")
    live = LiveStrategy(_Broken(), "BTC-USD", "1m")
    bar = {"ts": pd.Timestamp("2024-01-02", tz="UTC"), "open": 1.0, "high": 1.0, "low": 1.0}
    with pytest.raises(RuntimeError, match="broken rule"):
        live.update({**bar, "close": 1.0, "volume": 1.0}, source_message_id=new_message_id())
