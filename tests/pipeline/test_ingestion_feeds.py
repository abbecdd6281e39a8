"""Ingestion from a real market feed, against the local HTTP server that answers in Coinbase's
documented format (the only double: it stands at the process edge): warm-up history first, then
each completed bar published once as the clock moves on."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "providers"))

from provider_servers import ProviderServer, source

from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.ingestion import Ingestion


@pytest.fixture
def coinbase_server() -> Iterator[ProviderServer]:
    server = ProviderServer()
    server.start()
    yield server
    server.stop()


def test_coinbase_feed_publishes_each_completed_bar_once(
    pipeline_lab: Lab, coinbase_server: ProviderServer
) -> None:
    settings = pipeline_lab.settings.model_copy(
        update={
            "pipeline_feed": "coinbase",
            "pipeline_symbols": ("BTC-USD",),
            "coinbase_url": coinbase_server.url,
        }
    )
    now = [time.time()]
    ctx = ServiceContext(pipeline_lab, settings, "ingest-coinbase", clock=lambda: now[0])
    ingestion = Ingestion(ctx)
    timer, _ = ingestion.timers()
    assert timer.every_s == 60.0

    timer.fire()  # warm-up history, then the bars completed since
    now[0] += 5 * 60  # five minutes later: the bars completed meanwhile, once
    timer.fire()
    timer.fire()
    published = pipeline_lab.bus.inspect.read(Stream.MARKET_DATA, count=None)
    published_ts = pd.to_datetime(published["payload.ts"], utc=True)
    cached = pipeline_lab.cache.get_bars("BTC-USD", "1m")
    history = cached[~cached["ts"].isin(published_ts)]
    assert len(history) > 400  # the exchange's window, minus the minutes without trades
    start = history["ts"].iloc[-1]
    end = pd.Timestamp(now[0], unit="s", tz="UTC").floor("1min")
    expected = source().fetch_bars("BTC-USD", "1m", start + pd.Timedelta(minutes=1), end)
    assert len(expected) > 0
    assert list(published_ts) == list(expected["ts"])
    assert list(published["payload.close"]) == pytest.approx(list(expected["close"]))
    assert set(published["payload.source"]) == {"coinbase"}
