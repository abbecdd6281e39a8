"""Signal Engine on the machine's Redis: the live signals equal the strategies' batch form over
the same bars, each with its audit entry; a restarted engine resumes from the cache; a bar
handled again gives the same answer, also in a running engine whose batch the bus refused to
commit; unknown strategies are a clear error."""

from __future__ import annotations

import itertools
import math
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
from end_to_end_support import stream_messages

import tradeos_lab as tl
from tradeos_lab.contracts import AuditMessage, Bar, Message, Quote, RawSignal, new_message
from tradeos_lab.errors import ValidationError
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.runner import ServiceRunner
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services import signal_engine
from tradeos_lab.pipeline.services.signal_engine import SignalEngine
from tradeos_lab.providers import SyntheticProvider
from tradeos_lab.providers.files import save_bars
from tradeos_lab.secrets import SecretUrl
from tradeos_lab.settings import Settings
from tradeos_lab.stack.redis_server import RedisServerProcess
from tradeos_lab.strategies import FloatArray, RsiReversion, SmaCross, Strategy, Values

HISTORY = 200  # bars cached before the first live one (ingestion's warm-up)
STRATEGIES = ("sma_cross", "rsi_reversion")


@pytest.fixture
def bars() -> pd.DataFrame:
    return SyntheticProvider(seed=11, gap_rate=0.0, outage_rate=0.0).fetch_bars(
        "BTC-USD", "1m", "2024-05-01T00:00Z", "2024-05-01T08:00Z"
    )


def _engine(lab: Lab, strategies: tuple[str, ...] = STRATEGIES) -> SignalEngine:
    settings = lab.settings.model_copy(update={"pipeline_strategies": strategies})
    return SignalEngine(ServiceContext(lab=lab, settings=settings, instance="engine-test"))


def _bar_messages(bars: pd.DataFrame) -> list[Message]:
    fields = ["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]
    return [
        new_message(Bar(**{k: row[k] for k in fields}, source="synthetic"), producer="ingestion")
        for row in bars.to_dict("records")
    ]


def _signals(outputs: list[Message]) -> list[RawSignal]:
    return [m.payload for m in outputs if isinstance(m.payload, RawSignal)]


def _expected(strategy: Strategy[Any], bars: pd.DataFrame) -> list[tuple[pd.Timestamp, float]]:
    batch = strategy.signals(bars).iloc[HISTORY:]
    return [
        (row["ts"], row["strength"])
        for row in batch.to_dict("records")
        if not math.isnan(row["strength"])
    ]


def _assert_batch_parity(
    signals: list[RawSignal], bars: pd.DataFrame, *, besides: frozenset[pd.Timestamp] = frozenset()
) -> None:
    """The signals are the strategies' batch form's, bar for bar (`besides` those bars)."""
    for strategy in (SmaCross(), RsiReversion()):
        expected = [(t, s) for t, s in _expected(strategy, bars) if t not in besides]
        got = [
            (pd.Timestamp(s.ts), s.strength)
            for s in signals
            if s.strategy == strategy.name and pd.Timestamp(s.ts) not in besides
        ]
        assert expected, (
            f"{strategy.name} gives no signal on the test bars: the test proves nothing"
        )
        assert [t for t, _ in got] == [t for t, _ in expected]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-9)


def test_live_signals_equal_the_batch_form_over_the_same_bars(
    pipeline_lab: Lab, bars: pd.DataFrame
) -> None:
    pipeline_lab.cache.write_bars(bars.iloc[:HISTORY])  # what ingestion cached before
    engine = _engine(pipeline_lab)
    outputs: list[Message] = []
    for message in _bar_messages(bars.iloc[HISTORY:]):
        produced = engine.handle(message)
        assert all(m.causation_id == message.message_id for m in produced)
        assert all(m.correlation_id == message.correlation_id for m in produced)
        outputs.extend(produced)
    _assert_batch_parity(_signals(outputs), bars)
    assert {m.STREAM for m in outputs} == {Stream.SIGNALS_RAW, Stream.AUDIT}


def test_every_signal_has_an_audit_entry_naming_strategy_and_decision(
    pipeline_lab: Lab, bars: pd.DataFrame
) -> None:
    pipeline_lab.cache.write_bars(bars.iloc[:HISTORY])
    engine = _engine(pipeline_lab)
    outputs = [m for msg in _bar_messages(bars.iloc[HISTORY:]) for m in engine.handle(msg)]
    signals = _signals(outputs)
    audits = [m for m in outputs if isinstance(m, AuditMessage)]
    assert len(audits) == len(signals) > 0
    for signal, audit in zip(signals, audits, strict=True):
        assert audit.payload.actor == "service:signal_engine"
        assert audit.payload.target == f"strategy:{signal.strategy}"
        assert audit.payload.new_value["direction"] == signal.direction.value
        assert signal.symbol in audit.payload.reason


@pytest.mark.parametrize("stop_after", ["a quiet bar", "a signal"])
def test_a_stopped_engine_saves_its_states_and_the_next_resumes_from_them(
    pipeline_lab: Lab, bars: pd.DataFrame, stop_after: str
) -> None:
    """Stopped after a bar that gave no signal, or right after one that did (the state saved
    with its answer, a signal)."""
    pipeline_lab.cache.write_bars(bars.iloc[:HISTORY])
    messages = _bar_messages(bars.iloc[HISTORY:])
    half = len(messages) // 2
    if stop_after == "a signal":  # one followed closely by another, which a cold start misses
        signalled = sorted({t for s in (SmaCross(), RsiReversion()) for t, _ in _expected(s, bars)})
        close = next(a for a, b in itertools.pairwise(signalled) if b - a <= pd.Timedelta("3min"))
        half = 1 + next(i for i, m in enumerate(messages) if m.payload.ts == close)
    first = _engine(pipeline_lab)
    outputs = [m for msg in messages[:half] for m in first.handle(msg)]
    first.close()
    # Emptied cache bars prove the restart resumes from the saved states, not a re-warm-up.
    pipeline_lab.cache.redis.delete(pipeline_lab.keys.bars("BTC-USD", "1m"))
    restarted = _engine(pipeline_lab)
    outputs += [m for msg in messages[half:] for m in restarted.handle(msg)]
    _assert_batch_parity(_signals(outputs), bars)


def test_after_a_crash_the_engine_catches_up_on_the_cached_bars(
    pipeline_lab: Lab, bars: pd.DataFrame
) -> None:
    messages = _bar_messages(bars.iloc[HISTORY:])
    half, three_quarters = len(messages) // 2, 3 * len(messages) // 4
    pipeline_lab.cache.write_bars(bars.iloc[: HISTORY + half])  # ingestion caches, then publishes
    first = _engine(pipeline_lab)
    outputs = [m for msg in messages[:half] for m in first.handle(msg)]
    first.save()  # its last periodic save, then bars it never saved
    pipeline_lab.cache.write_bars(bars.iloc[: HISTORY + three_quarters])
    outputs += [m for msg in messages[half:three_quarters] for m in first.handle(msg)]
    # killed here: a new engine resumes from the older save and catches up on the cache
    pipeline_lab.cache.write_bars(bars)
    restarted = _engine(pipeline_lab)
    outputs += [m for msg in messages[three_quarters:] for m in restarted.handle(msg)]
    _assert_batch_parity(_signals(outputs), bars)


def test_a_state_saved_inside_a_batch_a_crash_left_unacked_swallows_none_of_its_bars(
    pipeline_lab: Lab, bars: pd.DataFrame
) -> None:
    """The periodic save can fall inside a batch, whose outputs are committed at its end: after
    a crash there the whole batch comes again, its first bars older than the saved state."""
    pipeline_lab.cache.write_bars(bars)  # ingestion caches every bar before publishing it
    messages = _bar_messages(bars.iloc[HISTORY:])
    signalled = sorted(t for t, _ in _expected(SmaCross(), bars))
    hit = next(i for i, m in enumerate(messages) if m.payload.ts == signalled[len(signalled) // 2])
    batch = range(hit - 2, hit + 3)  # a signal inside, before the save
    first = _engine(pipeline_lab)
    outputs = [m for msg in messages[: batch.start] for m in first.handle(msg)]
    for msg in messages[batch.start : batch.stop]:
        first.handle(msg)  # outputs never committed
    first.save()  # the periodic save, inside the batch
    restarted = _engine(pipeline_lab)  # killed before the ack: the batch comes again
    outputs += [m for msg in messages[batch.start :] for m in restarted.handle(msg)]
    _assert_batch_parity(_signals(outputs), bars)


def test_a_bar_whose_handling_failed_is_signalled_when_it_comes_again_after_later_bars(
    pipeline_lab: Lab, bars: pd.DataFrame
) -> None:
    """A bar whose handler failed stays pending while later bars are committed (their signals
    were decided without it); when it is delivered again the engine answers it as if on time,
    and from the next new bar on the states have taken every bar again."""
    pipeline_lab.cache.write_bars(bars)  # ingestion caches every bar before publishing it
    messages = _bar_messages(bars.iloc[HISTORY:])
    signalled = sorted(t for t, _ in _expected(SmaCross(), bars))
    failed = next(i for i, m in enumerate(messages) if m.payload.ts == signalled[1])
    later = failed + 20  # committed before the failed bar comes again
    engine = _engine(pipeline_lab)
    outputs = [m for msg in messages[:failed] for m in engine.handle(msg)]
    outputs += [m for msg in messages[failed + 1 : later] for m in engine.handle(msg)]
    engine.on_redelivery([messages[failed]])  # as the runner does for a redelivered entry
    outputs += engine.handle(messages[failed])
    outputs += [m for msg in messages[later:] for m in engine.handle(msg)]
    without_it = frozenset(pd.Timestamp(m.payload.ts) for m in messages[failed + 1 : later])
    _assert_batch_parity(sorted(_signals(outputs), key=lambda s: s.ts), bars, besides=without_it)


@pytest.mark.parametrize("lake", ["up", "down"])
def test_an_engine_further_behind_than_the_cache_reaches_reads_its_bars_from_the_lake(
    pipeline_settings: Settings,
    bars: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    lake: str,
) -> None:
    """Ingestion is so far ahead (a burst, a long outage) that the cache holds none of the bars
    before the ones the engine takes: it warms up on the lake's bars, and after a restart it
    catches up from its saved state on the lake's bars and, where ingestion crashed before it
    stored some, on the feed's, as if it had kept up. While the lake does not answer, it reads
    them all from the feed."""
    monkeypatch.setattr(signal_engine, "SAVE_EVERY_S", math.inf)  # saved when the test says
    recent = pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=2)  # the lake keeps it
    bars = bars.assign(ts=bars["ts"] - bars["ts"].iloc[0] + recent)
    feed = save_bars(bars, tmp_path / "feed.csv")
    settings = pipeline_settings.model_copy(
        update={
            "cache_bars": HISTORY,
            "pipeline_strategies": STRATEGIES,
            "pipeline_feed": f"replay:{feed}",
        }
    )
    lab = tl.connect(settings, start=False)
    try:
        unstored = bars.index[HISTORY + 60 : HISTORY + 80]  # ingestion crashed holding them
        lab.lake.write_bars(bars.drop(unstored))
        lab.cache.write_bars(bars)  # only the latest HISTORY stay cached: none before the first
        assert lab.cache.get_bars("BTC-USD", "1m")["ts"].iloc[0] > bars["ts"].iloc[HISTORY + 50]
        if lake == "down":  # a lake server nobody answers for
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                settings = settings.model_copy(
                    update={"lake_url": SecretUrl(f"http://127.0.0.1:{s.getsockname()[1]}/x")}
                )
            lab.close()
            lab = tl.connect(settings, start=False)
        messages = _bar_messages(bars.iloc[HISTORY:])
        first = SignalEngine(ServiceContext(lab=lab, settings=settings, instance="behind"))
        outputs = [m for msg in messages[:50] for m in first.handle(msg)]
        first.save()  # its last save, then bars it handled and committed but never saved
        outputs += [m for msg in messages[50:100] for m in first.handle(msg)]
        restarted = SignalEngine(ServiceContext(lab=lab, settings=settings, instance="behind"))
        outputs += [m for msg in messages[100:] for m in restarted.handle(msg)]
        _assert_batch_parity(_signals(outputs), bars)
    finally:
        lab.close()


def test_a_bar_handled_again_gives_the_same_outputs_and_an_older_one_none(
    pipeline_lab: Lab, bars: pd.DataFrame
) -> None:
    pipeline_lab.cache.write_bars(bars)  # ingestion caches every bar before publishing it
    signalled = sorted(t for t, _ in _expected(SmaCross(), bars))
    live_bars = bars.iloc[HISTORY:]
    messages = _bar_messages(live_bars[live_bars["ts"] <= signalled[-1]])
    engine = _engine(pipeline_lab)
    for msg in messages[:-1]:
        engine.handle(msg)
    last_msg = messages[-1]
    first = engine.handle(last_msg)
    assert _signals(first)  # the last bar signals, so the comparisons below can fail
    assert [m.payload for m in engine.handle(last_msg)] == [m.payload for m in first]

    restarted = _engine(pipeline_lab)  # a crash before the ack
    assert [m.payload for m in restarted.handle(last_msg)] == [m.payload for m in first]
    earlier = next(m for m in messages if m.payload.ts == signalled[-2])
    assert restarted.handle(earlier) == []  # older than the last bar taken


def test_unknown_strategy_name_is_a_clear_error(pipeline_lab: Lab) -> None:
    with pytest.raises(ValidationError, match="unknown strategy 'no_such_strategy'"):
        _engine(pipeline_lab, ("no_such_strategy",))
    with pytest.raises(ValidationError, match="cannot import strategy module"):
        _engine(pipeline_lab, ("no_such_module:Thing",))


class BrokenRule(SmaCross):
    """A user's strategy whose rule gives an impossible strength on every bar."""

    name = "test_broken_rule"

    def rule(self, values: Values) -> FloatArray:
        return np.full(len(values["close"]), 2.0)


def test_a_failing_strategy_is_audited_and_the_others_go_on(
    pipeline_lab: Lab, bars: pd.DataFrame
) -> None:
    pipeline_lab.cache.write_bars(bars.iloc[:HISTORY])
    engine_type = type(
        "TwoStrategies", (SignalEngine,), {"given_strategies": (BrokenRule(), SmaCross())}
    )
    engine = engine_type(
        ServiceContext(lab=pipeline_lab, settings=pipeline_lab.settings, instance="two")
    )
    messages = _bar_messages(bars.iloc[HISTORY:])
    outputs = [m for msg in messages for m in engine.handle(msg)]
    errors = [
        m for m in outputs if isinstance(m, AuditMessage) and m.payload.action == "signal.error"
    ]
    assert len(errors) == len(messages)
    assert "strength outside [-1, 1]" in errors[0].payload.reason
    assert errors[0].payload.target == "strategy:test_broken_rule"
    signals = _signals(outputs)
    assert {s.strategy for s in signals} == {"sma_cross"}
    assert [pd.Timestamp(s.ts) for s in signals] == [t for t, _ in _expected(SmaCross(), bars)]


def test_quotes_on_market_data_give_no_output(pipeline_lab: Lab) -> None:
    quote = Quote(
        symbol="BTC-USD",
        ts=pd.Timestamp("2024-05-01T00:00Z").to_pydatetime(),
        bid_price=100.0,
        bid_size=1.0,
        ask_price=100.5,
        ask_size=2.0,
        source="coinbase",
    )
    assert _engine(pipeline_lab).handle(new_message(quote, producer="ingestion")) == ()


def test_signals_keep_coming_while_the_cache_is_down(
    pipeline_settings: Settings,
    redis_server_factory: Callable[..., RedisServerProcess],
    bars: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(signal_engine, "SAVE_EVERY_S", 0.0)  # a save after every bar
    cache_server = redis_server_factory("cache", policy="allkeys-lru", maxmemory="64mb")
    settings = pipeline_settings.model_copy(
        update={"cache_url": SecretUrl(cache_server.url), "pipeline_strategies": STRATEGIES}
    )
    lab = tl.connect(settings, start=False)
    try:
        lab.cache.write_bars(bars.iloc[:HISTORY])
        engine = SignalEngine(ServiceContext(lab=lab, settings=settings, instance="no-cache"))
        messages = _bar_messages(bars.iloc[HISTORY:])
        half = len(messages) // 2
        outputs = [m for msg in messages[:half] for m in engine.handle(msg)]
        cache_server.kill()
        outputs += [m for msg in messages[half:] for m in engine.handle(msg)]
        engine.close()  # its last save fails, with a warning, and stopping goes on
        _assert_batch_parity(_signals(outputs), bars)
    finally:
        lab.close()


def test_a_batch_the_bus_refused_to_commit_is_answered_again_in_the_same_process(
    pipeline_settings: Settings,
    redis_server_factory: Callable[..., RedisServerProcess],
    bars: pd.DataFrame,
) -> None:
    """The bus runs out of memory while a batch is handled: the commit of its outputs and acks
    is refused, nothing of it committed. The running engine, its states already past the batch,
    gets the batch again from its oldest bar and signals every one of its bars, each once."""
    bus_server = redis_server_factory("bus")
    admin = redis.Redis.from_url(bus_server.url)
    messages = _bar_messages(bars.iloc[HISTORY:])
    refused = messages[100:200]  # the second batch
    signalled = {t for t, _ in _expected(SmaCross(), bars)}
    assert signalled & {m.payload.ts for m in refused}, "no signal in the batch: proves nothing"
    full: list[str] = []

    class BusFillsUp(SignalEngine):
        def handle(self, message: Message) -> Sequence[Message]:
            if message.message_id == refused[-1].message_id and not full:
                full.append(message.message_id)
                admin.config_set("maxmemory", 1)  # every XADD is refused from now on
            return super().handle(message)

    settings = pipeline_settings.model_copy(
        update={"bus_url": SecretUrl(bus_server.url), "pipeline_strategies": STRATEGIES}
    )
    lab = tl.connect(settings, start=False)
    try:
        lab.cache.write_bars(bars)  # ingestion caches every bar before publishing it
        ctx = ServiceContext(lab=lab, settings=settings, instance="refused-commit")
        runner = ServiceRunner(BusFillsUp, ctx, batch=100)
        (consumer,) = runner.consumers
        lab.bus.ensure_group(Stream.MARKET_DATA, SignalEngine.name)
        lab.bus.publish_many(Stream.MARKET_DATA, messages)
        runner.run_once()  # the first batch commits
        with pytest.raises(Exception, match="maxmemory"):
            runner.run_once()
        admin.config_set("maxmemory", 0)
        consumer.restart()  # as the consumer's loop does after a bus error
        runner.drain()
        signals = _signals(stream_messages(lab, Stream.SIGNALS_RAW))
        assert len(signals) == len({(s.strategy, s.ts) for s in signals})  # none twice
        _assert_batch_parity(signals, bars)
    finally:
        admin.close()
        lab.close()
