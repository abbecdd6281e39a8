"""Coinbase candles against a local server that answers in Coinbase Exchange's documented format."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pandas as pd
import pytest
from provider_servers import Fault, ProviderServer, source, utc

from tradeos_lab.bars import BAR_COLUMNS
from tradeos_lab.errors import (
    DependencyUnavailable,
    ProviderError,
    RateLimited,
    SymbolError,
    ValidationError,
)
from tradeos_lab.providers import BarProvider, CoinbaseProvider, TokenBucket
from tradeos_lab.retry import RetryPolicy
from tradeos_lab.settings import Settings

OHLCV = ["symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]
CANDLES = "/products/"


@pytest.fixture
def coinbase(
    provider_server: ProviderServer, fast_retry: RetryPolicy, unthrottled: TokenBucket
) -> Iterator[CoinbaseProvider]:
    """A patient client: a loaded test machine must not turn a slow answer into a retry."""
    provider = CoinbaseProvider(
        provider_server.url, retry=fast_retry, limiter=unthrottled, timeout=10.0
    )
    yield provider
    provider.close()


@pytest.fixture
def impatient_coinbase(
    provider_server: ProviderServer, fast_retry: RetryPolicy, unthrottled: TokenBucket
) -> Iterator[CoinbaseProvider]:
    """Times out after 0.5 s, for the tests that inject slow answers."""
    provider = CoinbaseProvider(
        provider_server.url, retry=fast_retry, limiter=unthrottled, timeout=0.5
    )
    yield provider
    provider.close()


def test_it_is_a_bar_provider(coinbase: CoinbaseProvider) -> None:
    assert isinstance(coinbase, BarProvider)
    assert coinbase.name == "coinbase"


def expected(symbol: str, timeframe: str, start: object, end: object) -> pd.DataFrame:
    return source().fetch_bars(symbol, timeframe, start, end)[OHLCV]  # type: ignore[arg-type]


def test_bars_equal_the_exchange_candles_across_many_pages(
    coinbase: CoinbaseProvider, provider_server: ProviderServer
) -> None:
    start, end = utc(2024, 3, 1), utc(2024, 3, 3, 2)  # 3,000 one-minute bars: 10 pages
    bars = coinbase.fetch_bars("BTC-USD", "1m", start, end)

    assert provider_server.count(CANDLES) == 10
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert bars["ts"].is_monotonic_increasing
    assert bars["ts"].min() >= start
    assert bars["ts"].max() < end
    pd.testing.assert_frame_equal(bars[OHLCV], expected("BTC-USD", "1m", start, end))
    assert bars["vwap"].isna().all()
    assert bars["trade_count"].isna().all()


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (utc(2024, 3, 1, 0, 0, 30), utc(2024, 3, 1, 5, 0, 0)),  # start between bars
        (utc(2024, 3, 1), utc(2024, 3, 1, 5, 0, 1)),  # end just after a bar opens
        (utc(2024, 3, 1), utc(2024, 3, 1, 5)),  # exactly 300 bars: one page
        (utc(2024, 3, 1), utc(2024, 3, 1, 5, 1)),  # 301 bars: two pages
    ],
)
def test_page_boundaries_lose_and_repeat_no_bar(
    coinbase: CoinbaseProvider, start: pd.Timestamp, end: pd.Timestamp
) -> None:
    bars = coinbase.fetch_bars("ETH-USD", "1m", start, end)
    pd.testing.assert_frame_equal(bars[OHLCV], expected("ETH-USD", "1m", start, end))
    assert not bars["ts"].duplicated().any()


def test_each_request_asks_for_at_most_300_candles_at_the_timeframes_granularity(
    coinbase: CoinbaseProvider, provider_server: ProviderServer
) -> None:
    for timeframe, seconds in [("5m", 300), ("15m", 900), ("1h", 3600), ("1d", 86400)]:
        coinbase.fetch_bars(
            "BTC-USD",
            timeframe,
            utc(2023, 1, 1),
            utc(2023, 1, 1) + 700 * timedelta(seconds=seconds),
        )
        asked = provider_server.requests_to(CANDLES)[-3:]
        assert {r.query["granularity"] for r in asked} == {str(seconds)}
        for r in asked:
            span = pd.Timestamp(r.query["end"]) - pd.Timestamp(r.query["start"])
            assert span.total_seconds() / seconds + 1 <= 300


def test_slash_pairs_map_to_the_product_id(
    coinbase: CoinbaseProvider, provider_server: ProviderServer
) -> None:
    bars = coinbase.fetch_bars("BTC/USD", "1h", utc(2024, 1, 1), utc(2024, 1, 2))
    assert provider_server.requests_to(CANDLES)[0].path == "/products/BTC-USD/candles"
    assert set(bars["symbol"]) == {"BTC-USD"}  # the canonical spelling, whatever was asked
    assert len(bars) > 20


def test_an_empty_answer_is_an_empty_frame_not_an_error(
    coinbase: CoinbaseProvider, provider_server: ProviderServer
) -> None:
    bars = coinbase.fetch_bars("ZRX-USD", "1m", utc(2024, 1, 1), utc(2024, 1, 1, 12))
    assert bars.empty
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert provider_server.count(CANDLES) == 3


def test_a_range_shorter_than_one_bar_sends_no_request(
    coinbase: CoinbaseProvider, provider_server: ProviderServer
) -> None:
    bars = coinbase.fetch_bars(
        "BTC-USD", "1m", utc(2024, 1, 1, 0, 0, 10), utc(2024, 1, 1, 0, 0, 50)
    )
    assert bars.empty
    assert provider_server.count() == 0


@pytest.mark.parametrize(
    "case",
    [
        ("AAPL'; DROP TABLE x;--", "1m", utc(2024, 1, 1), utc(2024, 1, 2), SymbolError),
        ("", "1m", utc(2024, 1, 1), utc(2024, 1, 2), SymbolError),
        ("BTC-USD", "2h", utc(2024, 1, 1), utc(2024, 1, 2), ValidationError),
        ("BTC-USD", "6h", utc(2024, 1, 1), utc(2024, 1, 2), ValidationError),
        ("BTC-USD", "1m", utc(2024, 1, 2), utc(2024, 1, 1), ValidationError),
        ("BTC-USD", "1m", utc(2024, 1, 1), utc(2024, 1, 1), ValidationError),
        ("BTC-USD", "1m", "not a date", utc(2024, 1, 1), ValidationError),
    ],
)
def test_bad_input_is_rejected_before_any_request(
    coinbase: CoinbaseProvider,
    provider_server: ProviderServer,
    case: tuple[str, str, object, object, type[Exception]],
) -> None:
    symbol, timeframe, start, end, error = case
    with pytest.raises(error):
        coinbase.fetch_bars(symbol, timeframe, start, end)  # type: ignore[arg-type]
    assert provider_server.count() == 0


def test_429_waits_for_retry_after_then_succeeds(
    coinbase: CoinbaseProvider, provider_server: ProviderServer
) -> None:
    provider_server.inject(
        CANDLES,
        Fault(429, {"message": "Public rate limit exceeded"}, headers={"Retry-After": "1"}),
    )
    began = time.monotonic()
    bars = coinbase.fetch_bars("BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 3))
    assert time.monotonic() - began >= 1.0
    assert provider_server.count(CANDLES) == 2
    pd.testing.assert_frame_equal(
        bars[OHLCV], expected("BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 3))
    )


def test_a_retry_after_longer_than_we_wait_fails_fast_with_rate_limited(
    coinbase: CoinbaseProvider, provider_server: ProviderServer
) -> None:
    provider_server.inject(
        CANDLES, Fault(429, {"message": "slow down"}, headers={"Retry-After": "3600"})
    )
    with pytest.raises(RateLimited, match="asked to wait 3600s"):
        coinbase.fetch_bars("BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 3))
    assert provider_server.count(CANDLES) == 1


def test_server_errors_are_retried(
    coinbase: CoinbaseProvider, provider_server: ProviderServer
) -> None:
    provider_server.inject(
        CANDLES, Fault(503, {"message": "unavailable"}), Fault(502, raw_body=b"<html>bad gateway")
    )
    bars = coinbase.fetch_bars("BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 3))
    assert provider_server.count(CANDLES) == 3
    assert len(bars) == len(expected("BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 3)))


def test_persistent_server_errors_give_up_with_a_clear_error(
    coinbase: CoinbaseProvider, provider_server: ProviderServer
) -> None:
    provider_server.inject(CANDLES, *[Fault(500, {"message": "internal"})] * 3)
    with pytest.raises(DependencyUnavailable, match=r"failed after 3 attempts.*500: internal"):
        coinbase.fetch_bars("BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 3))
    assert provider_server.count(CANDLES) == 3


def test_a_timeout_is_retried(
    impatient_coinbase: CoinbaseProvider, provider_server: ProviderServer
) -> None:
    provider_server.inject(CANDLES, Fault(delay=1.5))
    bars = impatient_coinbase.fetch_bars("BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 3))
    assert provider_server.count(CANDLES) == 2
    assert not bars.empty


def test_repeated_timeouts_fail_with_a_clear_error(
    impatient_coinbase: CoinbaseProvider, provider_server: ProviderServer
) -> None:
    provider_server.inject(CANDLES, *[Fault(delay=1.5)] * 3)
    with pytest.raises(DependencyUnavailable, match="did not answer in time") as failure:
        impatient_coinbase.fetch_bars("BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 3))
    assert "failed after 3 attempts" in str(failure.value)
    assert provider_server.count(CANDLES) == 3


def test_an_unreachable_exchange_is_transient_and_named(fast_retry: RetryPolicy) -> None:
    provider = CoinbaseProvider("http://127.0.0.1:9", retry=fast_retry, timeout=0.5)
    with pytest.raises(
        DependencyUnavailable, match=re.escape("cannot reach Coinbase at http://127.0.0.1:9")
    ):
        provider.fetch_bars("BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 2))


def test_malformed_json_is_a_provider_error_and_not_retried(
    coinbase: CoinbaseProvider, provider_server: ProviderServer
) -> None:
    provider_server.inject(CANDLES, Fault(200, raw_body=b"[[1704067200, 1.0, 2.0, 1.5"))
    with pytest.raises(ProviderError, match="malformed JSON"):
        coinbase.fetch_bars("BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 3))
    assert provider_server.count(CANDLES) == 1


@pytest.mark.parametrize(
    "payload",
    [
        {"candles": []},
        [[1704067200, 1.0, 2.0]],
        [[1704067200, "1.0", 2.0, 1.5, 1.6, 10.0]],
        [[1704067200.5, 1.0, 2.0, 1.5, 1.6, 10.0]],
        [{"time": 1704067200}],
    ],
)
def test_a_payload_that_breaks_the_documented_shape_is_a_provider_error(
    coinbase: CoinbaseProvider, provider_server: ProviderServer, payload: object
) -> None:
    provider_server.inject(CANDLES, Fault(200, payload))
    with pytest.raises(ProviderError):
        coinbase.fetch_bars("BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 3))
    assert provider_server.count(CANDLES) == 1


def test_candles_that_fail_the_bar_gate_are_the_providers_fault(
    coinbase: CoinbaseProvider, provider_server: ProviderServer
) -> None:
    high_below_low = [[1704070800, 5.0, 4.0, 4.5, 4.5, 1.0]]
    provider_server.inject(CANDLES, Fault(200, high_below_low))
    with pytest.raises(
        ProviderError, match=r"Coinbase returned bars that fail validation.*high < low"
    ):
        coinbase.fetch_bars("BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 1, 5))


def test_unknown_product_is_a_provider_error_and_not_retried(
    coinbase: CoinbaseProvider, provider_server: ProviderServer
) -> None:
    with pytest.raises(ProviderError, match="404: NotFound"):
        coinbase.fetch_bars("NOPE-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 3))
    assert provider_server.count(CANDLES) == 1


def test_a_rejected_request_is_a_provider_error_and_not_retried(
    coinbase: CoinbaseProvider, provider_server: ProviderServer
) -> None:
    provider_server.inject(CANDLES, Fault(400, {"message": "Unsupported granularity"}))
    with pytest.raises(ProviderError, match="400: Unsupported granularity"):
        coinbase.fetch_bars("BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 3))
    assert provider_server.count(CANDLES) == 1


def test_the_rate_limiter_paces_requests(
    provider_server: ProviderServer, fast_retry: RetryPolicy
) -> None:
    provider = CoinbaseProvider(
        provider_server.url, retry=fast_retry, limiter=TokenBucket(rate=20, capacity=1)
    )
    began = time.monotonic()
    provider.fetch_bars("BTC-USD", "1m", utc(2024, 3, 1), utc(2024, 3, 2, 6))  # 6 pages
    elapsed = time.monotonic() - began
    assert provider_server.count(CANDLES) == 6
    assert elapsed >= 5 / 20 * 0.95


def test_the_url_comes_from_settings(
    settings_factory: Callable[..., Settings], provider_server: ProviderServer
) -> None:
    settings = settings_factory(coinbase_url=provider_server.url + "/")
    with CoinbaseProvider.from_settings(settings) as provider:
        assert provider.url == provider_server.url
        assert not provider.fetch_bars("BTC-USD", "1d", utc(2024, 1, 1), utc(2024, 2, 1)).empty
