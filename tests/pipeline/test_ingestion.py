"""Ingestion on the machine's Redis and PostgreSQL with a chdb lake: each bar published once,
cache and lake kept up to date, warm-up history read before the first live bar, the replay feed,
and the market schedule of the real feeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import tradeos_lab as tl
from tradeos_lab.contracts import is_message_id
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.ingestion import (
    CACHE_INDICATORS,
    CLOSED_MARKET_POLL_S,
    Ingestion,
    MarketFeed,
    SyntheticFeed,
    bar_message_id,
)
from tradeos_lab.providers import SyntheticProvider, save_bars
from tradeos_lab.secrets import SecretUrl
from tradeos_lab.symbols import Timeframe


def _ingestion(lab: Lab, **settings: Any) -> Ingestion:
    chosen = {"pipeline_symbols": ("BTC-USD",), **settings}
    ctx = ServiceContext(
        lab=lab, settings=lab.settings.model_copy(update=chosen), instance="ingestion-test"
    )
    return Ingestion(ctx)


def _published(lab: Lab) -> pd.DataFrame:
    return lab.bus.inspect.read(Stream.MARKET_DATA)


def test_each_bar_is_published_once_across_polls_repolls_and_restarts(pipeline_lab: Lab) -> None:
    ingestion = _ingestion(pipeline_lab)
    timer, lake = ingestion.timers()
    assert lake.name == "lake"
    polls = [timer.fire() for _ in range(3)]
    # Bars are published by the poll itself, in one MULTI with the marker; the runner gets only
    # the audit entry of the series' start.
    (started,) = polls[0]
    assert started.payload.action == "ingestion.start"
    assert "synthetic feed started for BTC-USD 1m" in started.payload.reason
    assert [list(p) for p in polls[1:]] == [[], []]
    first = _published(pipeline_lab)
    assert len(first) == 3
    ts = pd.to_datetime(first["payload.ts"], utc=True)
    assert list(ts.diff().dropna()) == [pd.Timedelta(minutes=1)] * 2

    # The same bars again (a re-poll after a lost reply) publish nothing.
    again = pipeline_lab.cache.get_bars("BTC-USD", "1m", limit=3)
    assert ingestion.publish("BTC-USD", again) == []
    # A restarted ingestion continues after the last published bar.
    restarted = _ingestion(pipeline_lab)
    (resumed,) = restarted.timers()[0].fire()
    assert "resumed after a restart" in resumed.payload.reason
    after = _published(pipeline_lab)
    assert len(after) == 4
    assert after["message_id"].is_unique
    assert pd.Timestamp(after["payload.ts"].iloc[-1]) == ts.iloc[-1] + pd.Timedelta(minutes=1)


def test_bar_message_ids_come_from_feed_symbol_timeframe_and_time(pipeline_lab: Lab) -> None:
    ingestion = _ingestion(pipeline_lab)
    ingestion.timers()[0].fire()
    row = _published(pipeline_lab).iloc[0]
    ts = pd.Timestamp(row["payload.ts"])
    expected = bar_message_id("synthetic", "BTC-USD", "1m", ts)
    assert row["message_id"] == expected == row["correlation_id"]
    assert is_message_id(expected)
    assert bar_message_id("replay", "BTC-USD", "1m", ts) != expected
    assert bar_message_id("synthetic", "ETH-USD", "1m", ts) != expected


def test_warm_up_history_and_every_bar_reach_cache_and_lake(pipeline_lab: Lab) -> None:
    ingestion = _ingestion(pipeline_lab)
    ingestion.timers()[0].fire()
    ingestion.timers()[0].fire()
    published = _published(pipeline_lab)
    last_ts = pd.Timestamp(published["payload.ts"].iloc[-1])
    cache = pipeline_lab.cache

    bars = cache.get_bars("BTC-USD", "1m")
    assert len(bars) == pipeline_lab.settings.limits.cache_bars  # warm-up filled the window
    assert bars["ts"].iloc[-1] == last_ts
    price = cache.get_price("BTC-USD")
    assert price is not None
    assert price.price == pytest.approx(float(published["payload.close"].iloc[-1]))
    indicators = cache.get_indicators("BTC-USD", "1m")
    assert indicators is not None
    # Warmed on the history, every output has a value at the latest bar.
    assert set(indicators.values) == set(CACHE_INDICATORS.outputs)
    expected = CACHE_INDICATORS.batch(bars)
    assert indicators.values["sma_20"] == pytest.approx(expected["sma_20"].iloc[-1])

    # The live bars go to the lake in one batch, on the lake timer (or when ingestion stops).
    live_ts = list(pd.to_datetime(published["payload.ts"], utc=True))
    assert pipeline_lab.lake.read_bars("BTC-USD", "1m", limit=1)["ts"].iloc[-1] < live_ts[0]
    ingestion.timers()[-1].fire()
    lake = pipeline_lab.lake.read_bars("BTC-USD", "1m", limit=2)
    assert list(lake["ts"]) == live_ts


def test_replay_feed_publishes_the_file_in_order_one_bar_per_poll(
    pipeline_lab: Lab, tmp_path: Path
) -> None:
    bars = SyntheticProvider(seed=3).fetch_bars(
        "ETH-USD", "5m", "2024-03-01T00:00Z", "2024-03-01T00:20Z"
    )
    path = save_bars(bars, tmp_path / "eth.csv")
    ingestion = _ingestion(
        pipeline_lab,
        pipeline_feed=f"replay:{path}",
        pipeline_symbols=("ETH-USD",),
        pipeline_timeframe="5m",
    )
    timer, _ = ingestion.timers()
    assert timer.every_s == pipeline_lab.settings.pipeline_bar_interval_s
    for _ in range(len(bars) + 2):  # past the end of the file: nothing more
        timer.fire()
    published = _published(pipeline_lab)
    assert list(pd.to_datetime(published["payload.ts"], utc=True)) == list(bars["ts"])
    assert set(published["payload.source"]) == {"replay"}
    assert list(published["payload.close"]) == pytest.approx(list(bars["close"]))


def test_replay_of_a_symbol_the_file_lacks_is_a_clear_error(
    pipeline_lab: Lab, tmp_path: Path
) -> None:
    bars = SyntheticProvider().fetch_bars("ETH-USD", "1m", "2024-03-01T00:00Z", "2024-03-01T00:05Z")
    path = save_bars(bars, tmp_path / "eth.parquet")
    ingestion = _ingestion(pipeline_lab, pipeline_feed=f"replay:{path}")
    with pytest.raises(ValueError, match="holds no BTC-USD 1m bars"):
        ingestion.timers()[0].fire()


def test_equities_are_polled_every_minute_in_session_and_every_fifteen_outside() -> None:
    feed = MarketFeed("alpaca", SyntheticProvider())
    saturday = pd.Timestamp("2024-03-02T15:00Z")
    tuesday_open = pd.Timestamp("2024-03-05T15:00Z")  # 10:00 in New York
    minute_ago = saturday.timestamp() - 60
    assert not feed.due("AAPL", saturday, minute_ago)
    assert feed.due("AAPL", saturday, saturday.timestamp() - CLOSED_MARKET_POLL_S)
    assert feed.due("AAPL", tuesday_open, tuesday_open.timestamp() - 60)
    assert feed.due("BTC-USD", saturday, minute_ago)  # crypto trades around the clock
    assert feed.every_s == 60.0


def test_real_market_poll_asks_only_for_completed_bars_after_the_last() -> None:
    feed = MarketFeed("coinbase", SyntheticProvider(gap_rate=0.0, outage_rate=0.0))
    now = pd.Timestamp("2024-03-05T15:03:30Z")
    after = pd.Timestamp("2024-03-05T15:00Z")
    bars = feed.next_bars("BTC-USD", Timeframe("1m"), after, now)
    assert list(bars["ts"]) == [after + pd.Timedelta(minutes=m) for m in (1, 2)]
    assert feed.next_bars("BTC-USD", Timeframe("1m"), now.floor("1min"), now).empty


def test_on_the_embedded_stack_bars_reach_bus_cache_and_lake(embedded_pipeline_lab: Lab) -> None:
    lab = embedded_pipeline_lab
    ingestion = _ingestion(lab)
    for _ in range(2):
        ingestion.timers()[0].fire()
    published = _published(lab)
    assert len(published) == 2
    last_ts = pd.Timestamp(published["payload.ts"].iloc[-1])
    assert lab.cache.get_bars("BTC-USD", "1m", limit=1)["ts"].iloc[-1] == last_ts
    ingestion.close()  # stopping writes the lake's last batch
    assert lab.lake.read_bars("BTC-USD", "1m", limit=1)["ts"].iloc[-1] == last_ts


def test_bars_are_published_and_cached_while_the_lake_is_down(pipeline_lab: Lab) -> None:
    no_lake = pipeline_lab.settings.model_copy(
        update={"lake_url": SecretUrl("clickhouse://127.0.0.1:1")}  # nothing listens there
    )
    lab = tl.connect(no_lake, start=False)
    try:
        ingestion = _ingestion(lab)
        for _ in range(2):
            ingestion.timers()[0].fire()
        published = _published(lab)
        assert len(published) == 2
        cached = lab.cache.get_bars("BTC-USD", "1m")
        assert list(cached["ts"]) == list(pd.to_datetime(published["payload.ts"], utc=True))
        assert ingestion.flush_lake() == ()  # the lake's batch is dropped, with a warning
    finally:
        lab.close()


def test_synthetic_feed_serves_the_same_bars_as_the_generator_one_by_one() -> None:
    provider = SyntheticProvider(gap_rate=0.0, outage_rate=0.0)
    feed = SyntheticFeed("synthetic", provider, every_s=0.5)
    now = pd.Timestamp("2025-01-06T10:00:30Z")
    tf = Timeframe("1m")
    served = [feed.next_bars("ETH-USD", tf, None, now)]
    for _ in range(299):  # across the generator's 256-bar batches
        served.append(feed.next_bars("ETH-USD", tf, served[-1]["ts"].iloc[-1], now))
    bars = pd.concat(served, ignore_index=True)
    start = now.floor("1min")
    expected = provider.fetch_bars("ETH-USD", tf, start, start + pd.Timedelta(minutes=300))
    pd.testing.assert_frame_equal(bars, expected)
