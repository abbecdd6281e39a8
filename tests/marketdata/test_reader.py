"""Three-tier reads: cache -> bar store -> provider, on the real Redis, chdb lake and PostgreSQL."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from marketdata_helpers import NOW, CountingSynthetic, clock, last_completed
from prometheus_client import REGISTRY

from tradeos_lab.bars import BarStore
from tradeos_lab.errors import ProviderError, ValidationError
from tradeos_lab.marketdata import BarReader
from tradeos_lab.observability.health import HealthServer
from tradeos_lab.providers import FileReplayProvider, save_bars
from tradeos_lab.stores.lake import Lake
from tradeos_lab.tiers.cache import Cache

H = pd.Timedelta(hours=1)
TAIL_END = last_completed("1h") + H  # exclusive end of the completed 1h bars at NOW


def _bars(provider: CountingSynthetic, symbol: str, start: pd.Timestamp, end: pd.Timestamp):  # type: ignore[no-untyped-def]
    """Bars straight from the generator, not counted as requests."""
    return super(CountingSynthetic, provider).fetch_bars(symbol, "1h", start, end)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = ["ts", "open", "high", "low", "close", "volume"]
    pd.testing.assert_frame_equal(
        a.loc[:, cols].reset_index(drop=True), b.loc[:, cols].reset_index(drop=True)
    )


def _reader(cache: Cache, store: BarStore, provider: CountingSynthetic | None) -> BarReader:
    return BarReader(cache, store, provider, clock=clock)


# ---- cache tier ---------------------------------------------------------------------------------


def test_cache_hit_answers_without_touching_store_or_provider(
    cache: Cache, lake: Lake, provider: CountingSynthetic
) -> None:
    window = _bars(provider, "BTC-USD", TAIL_END - 500 * H, TAIL_END)
    cache.write_bars(window)
    reader = _reader(cache, lake, provider)

    got = reader.get_bars("BTC-USD", "1h", limit=100)

    _same(got, window.tail(100))
    assert reader.stats()["cache_hits"] == 1
    assert reader.stats()["store_hits"] + reader.stats()["store_misses"] == 0
    assert provider.calls == []
    assert lake.coverage().empty  # nothing was written down


def test_range_inside_the_cached_block_is_a_cache_hit(
    cache: Cache, lake: Lake, provider: CountingSynthetic
) -> None:
    window = _bars(provider, "BTC-USD", TAIL_END - 500 * H, TAIL_END)
    cache.write_bars(window)
    reader = _reader(cache, lake, provider)
    start, end = TAIL_END - 300 * H, TAIL_END - 200 * H

    got = reader.get_bars("BTC-USD", "1h", start=start, end=end)

    _same(got, window[(window["ts"] >= start) & (window["ts"] < end)])
    assert reader.stats()["cache_hits"] == 1
    assert provider.calls == []


def test_stale_cache_is_a_miss_and_only_the_newest_bars_are_fetched(
    cache: Cache, lake: Lake, provider: CountingSynthetic
) -> None:
    old_end = TAIL_END - 5 * H  # the ingestion stopped five bars ago
    window = _bars(provider, "BTC-USD", old_end - 500 * H, old_end)
    cache.write_bars(window)
    lake.write_bars(window)
    reader = _reader(cache, lake, provider)

    got = reader.get_bars("BTC-USD", "1h", limit=500)

    assert reader.stats()["cache_misses"] == 1
    assert provider.calls == [("BTC-USD", "1h", old_end, TAIL_END)]
    _same(got, _bars(provider, "BTC-USD", TAIL_END - 500 * H, TAIL_END))
    assert cache.get_bars("BTC-USD", "1h")["ts"].iloc[-1] == TAIL_END - H


# ---- store tier ---------------------------------------------------------------------------------


def test_store_hit_writes_the_window_back_to_the_cache(
    cache: Cache, store: BarStore, provider: CountingSynthetic
) -> None:
    stored = _bars(provider, "ETH-USD", TAIL_END - 600 * H, TAIL_END)
    store.write_bars(stored)
    reader = _reader(cache, store, provider)

    got = reader.get_bars("ETH-USD", "1h", limit=50)

    _same(got, stored.tail(50))
    assert reader.stats()["cache_misses"] == 1
    assert reader.stats()["store_hits"] == 1
    assert provider.calls == []
    _same(cache.get_bars("ETH-USD", "1h"), stored.tail(500))  # the whole cache window

    again = reader.get_bars("ETH-USD", "1h", limit=50)
    _same(again, got)
    assert reader.stats()["cache_hits"] == 1


def test_provider_is_asked_only_for_the_missing_tail(
    cache: Cache, store: BarStore, provider: CountingSynthetic
) -> None:
    have_until = TAIL_END - 100 * H
    store.write_bars(_bars(provider, "SOL-USD", TAIL_END - 500 * H, have_until))
    reader = _reader(cache, store, provider)

    got = reader.get_bars("SOL-USD", "1h", limit=500)

    assert provider.calls == [("SOL-USD", "1h", have_until, TAIL_END)]
    expected = _bars(provider, "SOL-USD", TAIL_END - 500 * H, TAIL_END)
    _same(got, expected)
    _same(store.read_bars("SOL-USD", "1h", TAIL_END - 500 * H, TAIL_END), expected)
    _same(cache.get_bars("SOL-USD", "1h"), expected)
    assert reader.stats() == {
        "cache_hits": 0,
        "cache_misses": 1,
        "store_hits": 0,
        "store_misses": 1,
        "provider_hits": 1,
        "provider_misses": 0,
        "provider_bars": 100,
    }


def test_provider_is_asked_for_each_hole_of_a_past_range_and_nothing_else(
    cache: Cache, lake: Lake, provider: CountingSynthetic
) -> None:
    end = TAIL_END - 1000 * H  # a past range: not a tail read, so the cache is left alone
    start = end - 200 * H
    full = _bars(provider, "ADA-USD", start, end)
    hole_a = (start + 20 * H, start + 35 * H)
    hole_b = (start + 150 * H, start + 151 * H)
    keep = ~full["ts"].between(hole_a[0], hole_a[1] - H) & ~full["ts"].between(
        hole_b[0], hole_b[1] - H
    )
    lake.write_bars(full[keep])
    reader = _reader(cache, lake, provider)

    got = reader.get_bars("ADA-USD", "1h", start=start, end=end)

    assert provider.calls == [("ADA-USD", "1h", *hole_a), ("ADA-USD", "1h", *hole_b)]
    _same(got, full)
    assert lake.gaps("ADA-USD", "1h", start, end).empty
    assert cache.get_bars("ADA-USD", "1h").empty


def test_a_hole_the_provider_cannot_fill_is_asked_once(cache: Cache, lake: Lake) -> None:
    gappy = CountingSynthetic(seed=5, gap_rate=0.05)
    end = TAIL_END - 2000 * H
    start = end - 300 * H
    reader = _reader(cache, lake, gappy)

    first = reader.get_bars("XRP-USD", "1h", start=start, end=end)
    holes = lake.gaps("XRP-USD", "1h", start, end)
    assert len(holes) > 0, "the seed must leave holes for this test to mean anything"
    assert len(first) == 300 - int(holes["missing_bars"].sum())
    ledger = lake.gap_ledger("XRP-USD", "1h", open_only=True)
    assert list(ledger["gap_start"]) == list(holes["gap_start"])

    gappy.calls.clear()
    second = reader.get_bars("XRP-USD", "1h", start=start, end=end)

    assert gappy.calls == []
    _same(second, first)
    assert reader.stats()["store_hits"] == 1


def _gappy_with_its_latest_bar() -> CountingSynthetic:
    """A seeded provider that leaves holes in the latest 500 hours but has the latest completed
    bar (where the holes fall depends on the hour the test runs at; a hole in the newest bar
    makes any cached tail stale, which is another test's case)."""
    for seed in range(5, 100):
        gappy = CountingSynthetic(seed=seed, gap_rate=0.05)
        series = _bars(gappy, "XRP-USD", TAIL_END - 500 * H, TAIL_END)
        if len(series) < 500 and series["ts"].iloc[-1] == TAIL_END - H:
            return gappy
    raise AssertionError("no seed in 5..99 leaves holes but keeps the latest bar")


def test_limit_counts_bars_so_holes_do_not_shorten_the_answer(cache: Cache, lake: Lake) -> None:
    gappy = _gappy_with_its_latest_bar()
    reader = _reader(cache, lake, gappy)

    got = reader.get_bars("XRP-USD", "1h", limit=200)

    series = _bars(gappy, "XRP-USD", TAIL_END - 700 * H, TAIL_END)
    assert (series["ts"] >= TAIL_END - 500 * H).sum() < 500, "the seed must leave holes"
    _same(got, series.tail(200))
    assert gappy.calls[0][2:] == (TAIL_END - 500 * H, TAIL_END)
    assert len(gappy.calls) >= 2  # it reached back past the holes for the full cache window
    _same(cache.get_bars("XRP-USD", "1h"), series.tail(500))

    asked = len(gappy.calls)
    _same(reader.get_bars("XRP-USD", "1h"), series.tail(500))  # default: the latest 500 bars
    assert reader.stats()["cache_hits"] == 1
    assert len(gappy.calls) == asked


def test_without_a_provider_missing_bars_are_simply_absent(cache: Cache, lake: Lake) -> None:
    source = CountingSynthetic()
    end = TAIL_END - 100 * H
    lake.write_bars(_bars(source, "LTC-USD", end - 50 * H, end))
    reader = _reader(cache, lake, None)

    got = reader.get_bars("LTC-USD", "1h", start=end - 80 * H, end=end)

    assert len(got) == 50
    assert reader.stats()["store_misses"] == 1


def test_a_provider_error_propagates_and_writes_nothing(
    cache: Cache, lake: Lake, tmp_path: Path
) -> None:
    other = CountingSynthetic()
    path = save_bars(_bars(other, "BTC-USD", TAIL_END - 10 * H, TAIL_END), tmp_path / "btc.csv")
    reader = _reader(cache, lake, FileReplayProvider(path))  # type: ignore[arg-type]

    with pytest.raises(ProviderError, match="holds no DOT-USD"):
        reader.get_bars("DOT-USD", "1h", limit=10)

    assert lake.coverage().empty
    assert cache.get_bars("DOT-USD", "1h").empty


# ---- counters -----------------------------------------------------------------------------------


def _sample(tier: str, result: str) -> float:
    value = REGISTRY.get_sample_value("tradeos_bar_reads_total", {"tier": tier, "result": result})
    return value or 0.0


def test_hits_and_misses_are_prometheus_counters_served_on_metrics(
    cache: Cache, lake: Lake, provider: CountingSynthetic
) -> None:
    before = {
        (t, r): _sample(t, r) for t in ("cache", "store", "provider") for r in ("hit", "miss")
    }
    reader = _reader(cache, lake, provider)
    reader.get_bars("BTC-USD", "1h", limit=20)  # cache miss, store miss, provider hit
    reader.get_bars("BTC-USD", "1h", limit=20)  # cache hit

    assert _sample("cache", "miss") - before["cache", "miss"] == 1
    assert _sample("cache", "hit") - before["cache", "hit"] == 1
    assert _sample("store", "miss") - before["store", "miss"] == 1
    assert _sample("provider", "hit") - before["provider", "hit"] == 1
    assert reader.stats()["provider_bars"] == 500

    server = HealthServer("test", lambda: {}).start()
    try:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.stop()
    assert 'tradeos_bar_reads_total{result="hit",tier="cache"}' in text
    assert 'tradeos_bar_provider_bars_total{provider="synthetic"}' in text

    reader.reset_stats()
    assert set(reader.stats().values()) == {0}


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"symbol": "AAPL'; DROP TABLE x;--"}, "symbol"),
        ({"symbol": "AA';--"}, "not a ticker"),
        ({"symbol": ""}, "empty"),
        ({"symbol": "A" * 10_000}, "characters long"),
        ({"symbol": "АAPL"}, "not a ticker"),  # Cyrillic A
        ({"timeframe": "7m"}, "unknown timeframe"),
        ({"start": NOW, "end": NOW - H}, "after end"),
        ({"start": "not a time"}, "not a timestamp"),
        ({"limit": 0}, "limit"),
        ({"limit": -5}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": "5"}, "limit"),
    ],
)
def test_bad_input_is_rejected_before_any_tier(
    cache: Cache, lake: Lake, provider: CountingSynthetic, kwargs: dict[str, object], message: str
) -> None:
    reader = _reader(cache, lake, provider)
    args: dict[str, object] = {"symbol": "BTC-USD", "timeframe": "1h", **kwargs}

    with pytest.raises(ValidationError, match=message):
        reader.get_bars(**args)  # type: ignore[arg-type]

    assert set(reader.stats().values()) == {0}
    assert provider.calls == []
    assert lake.coverage().empty


def test_an_empty_range_reads_nothing(
    cache: Cache, lake: Lake, provider: CountingSynthetic
) -> None:
    reader = _reader(cache, lake, provider)
    assert reader.get_bars("BTC-USD", "1h", start=NOW, end=NOW).empty
    assert provider.calls == []
