"""Alpaca bars through alpaca-py against a local server answering like Alpaca market data."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import pandas as pd
import pytest
from provider_servers import (
    API_KEY,
    SECRET_KEY,
    Fault,
    ProviderServer,
    alpaca_stock_bars,
    source,
    utc,
)

from tradeos_lab.bars import BAR_COLUMNS
from tradeos_lab.errors import (
    ConfigError,
    DependencyUnavailable,
    ProviderError,
    SymbolError,
    ValidationError,
)
from tradeos_lab.providers import BarProvider, TokenBucket
from tradeos_lab.providers.alpaca import AlpacaProvider
from tradeos_lab.retry import RetryPolicy
from tradeos_lab.settings import Settings

STOCKS = "/v2/stocks/bars"
CRYPTO = "/v1beta3/crypto/us/bars"


def _alpaca(
    server: ProviderServer, retry: RetryPolicy, limiter: TokenBucket, timeout: float
) -> AlpacaProvider:
    return AlpacaProvider(
        API_KEY, SECRET_KEY, url=server.url, retry=retry, limiter=limiter, timeout=timeout
    )


@pytest.fixture
def alpaca(
    provider_server: ProviderServer, fast_retry: RetryPolicy, unthrottled: TokenBucket
) -> Iterator[AlpacaProvider]:
    """A patient client: a loaded test machine must not turn a slow answer into a retry."""
    provider = _alpaca(provider_server, fast_retry, unthrottled, timeout=10.0)
    yield provider
    provider.close()


@pytest.fixture
def impatient_alpaca(
    provider_server: ProviderServer, fast_retry: RetryPolicy, unthrottled: TokenBucket
) -> Iterator[AlpacaProvider]:
    """Times out after 0.5 s, for the tests that inject slow answers."""
    provider = _alpaca(provider_server, fast_retry, unthrottled, timeout=0.5)
    yield provider
    provider.close()


def test_it_is_a_bar_provider(alpaca: AlpacaProvider) -> None:
    assert isinstance(alpaca, BarProvider)
    assert alpaca.name == "alpaca"


def expected_stock(symbol: str, timeframe: str, start: datetime, end: datetime) -> pd.DataFrame:
    """The server's bars for [start, end): Alpaca's end is inclusive, ours is not."""
    bars = alpaca_stock_bars(symbol, timeframe, start, end)
    return bars.loc[bars["ts"] < pd.Timestamp(end)].reset_index(drop=True)


def test_stock_bars_follow_next_page_token_across_many_pages(
    alpaca: AlpacaProvider, provider_server: ProviderServer
) -> None:
    provider_server.alpaca_page_size = 50
    start, end = utc(2024, 3, 4), utc(2024, 3, 16)
    bars = alpaca.fetch_bars("AAPL", "1h", start, end)

    pages = provider_server.requests_to(STOCKS)
    assert len(pages) == -(-len(bars) // 50) >= 4
    assert [bool(p.query.get("page_token")) for p in pages] == [False] + [True] * (len(pages) - 1)
    assert list(bars.columns) == list(BAR_COLUMNS)
    pd.testing.assert_frame_equal(bars, expected_stock("AAPL", "1h", start, end))


def test_long_ranges_are_fetched_in_windows_that_join_seamlessly(
    provider_server: ProviderServer, fast_retry: RetryPolicy, unthrottled: TokenBucket
) -> None:
    provider = AlpacaProvider(
        API_KEY,
        SECRET_KEY,
        url=provider_server.url,
        retry=fast_retry,
        limiter=unthrottled,
        window_bars=100,
    )
    start, end = utc(2024, 3, 4, 0, 30), utc(2024, 3, 6, 7)
    bars = provider.fetch_bars("MSFT", "5m", start, end)
    assert provider_server.count(STOCKS) == 7  # 654 five-minute intervals, 100 per window
    pd.testing.assert_frame_equal(bars, expected_stock("MSFT", "5m", start, end))


def test_a_bar_opening_exactly_at_end_is_left_out(alpaca: AlpacaProvider) -> None:
    bars = alpaca.fetch_bars("AAPL", "1h", utc(2024, 3, 4, 10), utc(2024, 3, 4, 14))
    assert list(bars["ts"].dt.hour) == [10, 11, 12, 13]


def test_daily_bars_are_keyed_by_their_session_date(
    alpaca: AlpacaProvider, provider_server: ProviderServer
) -> None:
    # Winter (05:00Z) and summer (04:00Z) stamps both become 00:00 UTC of the session date.
    start, end = utc(2024, 3, 1), utc(2024, 3, 20)
    bars = alpaca.fetch_bars("AAPL", "1d", start, end)
    raw = provider_server.requests_to(STOCKS)
    assert raw
    assert (bars["ts"].dt.hour == 0).all()
    pd.testing.assert_frame_equal(bars, expected_stock("AAPL", "1d", start, end))


def test_crypto_pairs_use_the_crypto_endpoint_and_need_no_keys(
    provider_server: ProviderServer, fast_retry: RetryPolicy, unthrottled: TokenBucket
) -> None:
    provider = AlpacaProvider(url=provider_server.url, retry=fast_retry, limiter=unthrottled)
    start, end = utc(2024, 1, 6), utc(2024, 1, 7)
    bars = provider.fetch_bars("BTC/USD", "15m", start, end)
    assert provider_server.count(CRYPTO) == 1
    assert provider_server.count(STOCKS) == 0
    assert len(bars) > 90  # weekends included: crypto trades every day
    pd.testing.assert_frame_equal(bars, source().fetch_bars("BTC/USD", "15m", start, end))


def test_stock_bars_without_keys_fail_before_any_request(provider_server: ProviderServer) -> None:
    provider = AlpacaProvider(url=provider_server.url)
    with pytest.raises(ConfigError, match="alpaca_api_key"):
        provider.fetch_bars("AAPL", "1h", utc(2024, 3, 4), utc(2024, 3, 5))
    assert provider_server.count() == 0


def test_unknown_ticker_is_an_empty_answer(alpaca: AlpacaProvider) -> None:
    # Alpaca answers a ticker it does not list with no bars, not an error; we pass that on.
    bars = alpaca.fetch_bars("ZZZZ", "1h", utc(2024, 3, 4), utc(2024, 3, 5))
    assert bars.empty
    assert list(bars.columns) == list(BAR_COLUMNS)


@pytest.mark.parametrize(
    "case",
    [
        ("AAPL'; DROP TABLE x;--", "1h", utc(2024, 1, 1), utc(2024, 1, 2), SymbolError),
        ("А" + "APL", "1h", utc(2024, 1, 1), utc(2024, 1, 2), SymbolError),  # Cyrillic A
        ("X" * 10_000, "1h", utc(2024, 1, 1), utc(2024, 1, 2), SymbolError),
        ("AAPL", "4h", utc(2024, 1, 1), utc(2024, 1, 2), ValidationError),
        ("AAPL", "1h", utc(2024, 1, 2), utc(2024, 1, 1), ValidationError),
    ],
)
def test_bad_input_is_rejected_before_any_request(
    alpaca: AlpacaProvider,
    provider_server: ProviderServer,
    case: tuple[str, str, datetime, datetime, type[Exception]],
) -> None:
    symbol, timeframe, start, end, error = case
    with pytest.raises(error):
        alpaca.fetch_bars(symbol, timeframe, start, end)
    assert provider_server.count() == 0


def test_429_waits_for_retry_after_then_succeeds(
    alpaca: AlpacaProvider, provider_server: ProviderServer
) -> None:
    provider_server.inject(
        STOCKS, Fault(429, {"message": "too many requests."}, headers={"Retry-After": "1"})
    )
    began = time.monotonic()
    bars = alpaca.fetch_bars("AAPL", "1h", utc(2024, 3, 4), utc(2024, 3, 6))
    assert time.monotonic() - began >= 1.0
    assert provider_server.count(STOCKS) == 2
    pd.testing.assert_frame_equal(
        bars, expected_stock("AAPL", "1h", utc(2024, 3, 4), utc(2024, 3, 6))
    )


def test_server_errors_are_retried_on_our_schedule(
    alpaca: AlpacaProvider, provider_server: ProviderServer
) -> None:
    provider_server.inject(STOCKS, Fault(500, {"message": "internal error"}), Fault(504, {}))
    began = time.monotonic()
    bars = alpaca.fetch_bars("AAPL", "1h", utc(2024, 3, 4), utc(2024, 3, 6))
    assert provider_server.count(STOCKS) == 3
    assert not bars.empty
    assert time.monotonic() - began < 2.9  # alpaca-py's own retry would sleep 3 s per error


def test_repeated_timeouts_fail_with_a_clear_error(
    impatient_alpaca: AlpacaProvider, provider_server: ProviderServer
) -> None:
    provider_server.inject(STOCKS, *[Fault(delay=1.5)] * 3)
    with pytest.raises(DependencyUnavailable, match="did not answer in time") as failure:
        impatient_alpaca.fetch_bars("AAPL", "1h", utc(2024, 3, 4), utc(2024, 3, 6))
    assert "failed after 3 attempts" in str(failure.value)
    assert provider_server.count(STOCKS) == 3


def test_an_unreachable_endpoint_is_transient(fast_retry: RetryPolicy) -> None:
    provider = AlpacaProvider(API_KEY, SECRET_KEY, url="http://127.0.0.1:9", retry=fast_retry)
    with pytest.raises(DependencyUnavailable, match="cannot reach Alpaca"):
        provider.fetch_bars("AAPL", "1h", utc(2024, 3, 4), utc(2024, 3, 6))


def test_malformed_json_is_a_provider_error_and_not_retried(
    alpaca: AlpacaProvider, provider_server: ProviderServer
) -> None:
    provider_server.inject(STOCKS, Fault(200, raw_body=b'{"bars": {"AAPL": [{"t": '))
    with pytest.raises(ProviderError, match="malformed JSON"):
        alpaca.fetch_bars("AAPL", "1h", utc(2024, 3, 4), utc(2024, 3, 6))
    assert provider_server.count(STOCKS) == 1


@pytest.mark.parametrize(
    "payload",
    [
        {"quotes_by_mistake": {}},
        {"bars": None, "next_page_token": None},
        {"bars": {"AAPL": {"t": "2024-03-04T10:00:00Z"}}, "next_page_token": None},
        {"bars": {"AAPL": [{"t": "2024-03-04T10:00:00Z", "o": 1.0}]}, "next_page_token": None},
    ],
)
def test_a_payload_of_another_shape_is_a_provider_error(
    alpaca: AlpacaProvider, provider_server: ProviderServer, payload: object
) -> None:
    provider_server.inject(STOCKS, Fault(200, payload))
    with pytest.raises(ProviderError):
        alpaca.fetch_bars("AAPL", "1h", utc(2024, 3, 4), utc(2024, 3, 6))
    assert provider_server.count(STOCKS) == 1


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "invalid timeframe"),
        (403, "forbidden"),
        (404, "endpoint not found"),
        (422, "invalid start"),
    ],
)
def test_client_errors_are_provider_errors_and_not_retried(
    alpaca: AlpacaProvider, provider_server: ProviderServer, status: int, message: str
) -> None:
    provider_server.inject(STOCKS, Fault(status, {"code": 40010000, "message": message}))
    with pytest.raises(ProviderError, match=f"{status}: {message}"):
        alpaca.fetch_bars("AAPL", "1h", utc(2024, 3, 4), utc(2024, 3, 6))
    assert provider_server.count(STOCKS) == 1


def test_wrong_keys_are_a_provider_error(
    provider_server: ProviderServer, fast_retry: RetryPolicy
) -> None:
    provider = AlpacaProvider(API_KEY, "wrong-secret", url=provider_server.url, retry=fast_retry)
    with pytest.raises(ProviderError, match="401: request is not authorized"):
        provider.fetch_bars("AAPL", "1h", utc(2024, 3, 4), utc(2024, 3, 6))
    assert provider_server.count(STOCKS) == 1


def test_keys_never_appear_in_logs_repr_or_errors(
    settings_factory: Callable[..., Settings],
    provider_server: ProviderServer,
    fast_retry: RetryPolicy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's request lines included
    settings = settings_factory(
        alpaca_api_key=API_KEY, alpaca_secret_key=SECRET_KEY, alpaca_data_url=provider_server.url
    )
    provider = AlpacaProvider.from_settings(settings, retry=fast_retry)
    provider_server.inject(
        STOCKS,
        Fault(503, {"message": "unavailable"}),
        Fault(429, {"message": "slow down"}, headers={"Retry-After": "0"}),
    )
    bars = provider.fetch_bars("AAPL", "1h", utc(2024, 3, 4), utc(2024, 3, 6))
    provider_server.inject(STOCKS, Fault(403, {"message": "forbidden"}))
    with pytest.raises(ProviderError) as failure:
        provider.fetch_bars("AAPL", "1h", utc(2024, 3, 4), utc(2024, 3, 6))

    # the keys did reach the server, and nowhere else
    assert provider_server.requests_to(STOCKS)[0].headers["apca-api-key-id"] == API_KEY
    assert not bars.empty
    assert "retry 1/2" in caplog.text
    shown = [
        caplog.text,
        repr(provider),
        str(provider.__dict__),
        str(failure.value),
        repr(settings),
    ]
    for text in shown:
        assert API_KEY not in text
        assert SECRET_KEY not in text


def test_every_request_passes_the_rate_limiter(
    provider_server: ProviderServer, fast_retry: RetryPolicy
) -> None:
    provider_server.alpaca_page_size = 10
    provider = AlpacaProvider(
        API_KEY,
        SECRET_KEY,
        url=provider_server.url,
        retry=fast_retry,
        limiter=TokenBucket(rate=20, capacity=1),
    )
    began = time.monotonic()
    provider.fetch_bars("AAPL", "1h", utc(2024, 3, 4), utc(2024, 3, 6))  # 48 bars: 5 pages
    assert provider_server.count(STOCKS) == 5
    assert time.monotonic() - began >= 4 / 20 * 0.95
