"""Alpaca market data bars through alpaca-py (`/v2/stocks/bars`, `/v1beta3/crypto/us/bars`).

alpaca-py follows `next_page_token` itself; we split long ranges into windows so a transient
failure re-fetches one window, not the whole history, and we own retries (alpaca-py's own retry
sleeps a fixed 3 s and ignores `Retry-After`, so it is switched off). Alpaca's `end` is inclusive;
we keep [start, end). Daily bars are stamped at midnight New York (04:00/05:00 UTC); we key them
by their session date at 00:00 UTC, the grid every store uses. Alpaca answers a ticker it does not
list with no bars rather than an error, so there an empty frame can also mean "unknown ticker".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pandas as pd
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical import CryptoHistoricalDataClient, StockHistoricalDataClient
from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from pydantic import SecretStr
from requests.adapters import HTTPAdapter

from tradeos_lab.errors import (
    ConfigError,
    DependencyUnavailable,
    ProviderError,
    ProviderRateLimited,
)
from tradeos_lab.providers.base import (
    BarRequest,
    HttpProvider,
    RateLimiter,
    TimeLike,
    TokenBucket,
    finish,
)
from tradeos_lab.retry import RetryPolicy, parse_retry_after, retry_call
from tradeos_lab.settings import Settings
from tradeos_lab.symbols import Timeframe, canonical_symbol

log = logging.getLogger(__name__)

DEFAULT_URL = "https://data.alpaca.markets"
TIMEFRAMES = {
    Timeframe.M1: (1, TimeFrameUnit.Minute),
    Timeframe.M5: (5, TimeFrameUnit.Minute),
    Timeframe.M15: (15, TimeFrameUnit.Minute),
    Timeframe.H1: (1, TimeFrameUnit.Hour),
    Timeframe.D1: (1, TimeFrameUnit.Day),
}
_FIELDS = {"t": "ts", "o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}
_OPTIONAL = {"vw": "vwap", "n": "trade_count"}


def alpaca_timeframe(timeframe: Timeframe | str) -> TimeFrame:
    """alpaca-py's `TimeFrame` for one of ours."""
    amount, unit = TIMEFRAMES[Timeframe.parse(timeframe)]
    return TimeFrame(amount, unit)


# The quote currencies of Alpaca's crypto pairs: a canonical BASE-QUOTE symbol ending in one of
# them is a pair (BRK-B, a stock, is not).
CRYPTO_QUOTES = frozenset({"USD", "USDT", "USDC", "BTC", "ETH"})


def is_crypto(symbol: str) -> bool:
    """Whether a canonical symbol is a crypto pair (BTC-USD), which Alpaca serves apart."""
    base, sep, quote = symbol.partition("-")
    return bool(sep and base) and quote in CRYPTO_QUOTES


def alpaca_symbol(symbol: str) -> str:
    """Alpaca's spelling of a canonical symbol: crypto pairs are BASE/QUOTE (BTC/USD)."""
    return symbol.replace("-", "/", 1) if is_crypto(symbol) else symbol


def symbol_from_alpaca(symbol: str, asset_class: str | None = None) -> str:
    """The canonical spelling of a symbol as Alpaca writes it: orders say BTC/USD, positions of
    crypto say BTCUSD (asset class `crypto`), split at the longest known quote currency."""
    if "/" not in symbol and asset_class == "crypto":
        for quote in sorted(CRYPTO_QUOTES, key=len, reverse=True):
            if symbol.upper().endswith(quote) and len(symbol) > len(quote):
                return canonical_symbol(f"{symbol[: -len(quote)]}-{quote}")
    return canonical_symbol(symbol)


class AlpacaProvider(HttpProvider):
    """Stock and crypto bars from Alpaca's market data API, endpoint configurable."""

    name = "alpaca"

    def __init__(
        self,
        api_key: SecretStr | str | None = None,
        secret_key: SecretStr | str | None = None,
        *,
        url: str = DEFAULT_URL,
        feed: DataFeed | str = DataFeed.IEX,
        adjustment: Adjustment | str = Adjustment.RAW,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        window_bars: int = 10_000,
    ) -> None:
        self.url = url.rstrip("/")
        self.feed = DataFeed(feed)
        self.adjustment = Adjustment(adjustment)
        # Alpaca's free plan allows 200 calls a minute; the bucket is applied to every HTTP
        # request alpaca-py sends, pages included.
        self.limiter: RateLimiter = limiter or TokenBucket(rate=200 / 60, capacity=10)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        if window_bars < 1:
            raise ValueError("window_bars must be positive")
        self.window_bars = window_bars
        self._api_key = secret_or_none(api_key)
        self._secret_key = secret_or_none(secret_key)
        self._stock: Any = None
        self._crypto: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> AlpacaProvider:
        return cls(
            settings.alpaca_api_key,
            settings.alpaca_secret_key,
            url=settings.alpaca_data_url,
            **kwargs,
        )

    def fetch_bars(
        self, symbol: str, timeframe: Timeframe | str, start: TimeLike, end: TimeLike
    ) -> pd.DataFrame:
        """Bars opening in [start, end); empty only when Alpaca answered with no bars."""
        request = BarRequest(symbol, timeframe, start, end)
        client = self._client(crypto=is_crypto(request.symbol))
        rows: list[dict[str, Any]] = []
        for window_start, window_end in self.windows(request):
            rows.extend(self._window(client, request, window_start, window_end))
        return finish(_frame(rows, request), request, "Alpaca")

    def windows(self, request: BarRequest) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """[start, end) windows of at most `window_bars` bars of calendar time each."""
        span = timedelta(seconds=request.step * self.window_bars)
        out = []
        cursor = request.start
        while cursor < request.end:
            out.append((cursor, min(cursor + span, request.end)))
            cursor = cursor + span
        return out

    def _window(
        self, client: Any, request: BarRequest, start: pd.Timestamp, end: pd.Timestamp
    ) -> list[dict[str, Any]]:
        what = f"Alpaca bars {request.symbol} {request.timeframe.value} from {start.isoformat()}"
        params: dict[str, Any] = {
            "symbol_or_symbols": alpaca_symbol(request.symbol),
            "timeframe": alpaca_timeframe(request.timeframe),
            "start": start.to_pydatetime(),
            # Alpaca's end is inclusive; a bar opening exactly at `end` is dropped later.
            "end": end.to_pydatetime(),
        }

        def once() -> list[dict[str, Any]]:
            try:
                if is_crypto(request.symbol):
                    raw = client.get_crypto_bars(CryptoBarsRequest(**params))
                else:
                    raw = client.get_stock_bars(
                        StockBarsRequest(**params, feed=self.feed, adjustment=self.adjustment)
                    )
            except APIError as e:
                raise api_error(e, what) from e
            except requests.exceptions.JSONDecodeError as e:
                raise ProviderError(f"{what}: Alpaca answered with malformed JSON: {e}") from e
            except requests.exceptions.Timeout as e:
                raise DependencyUnavailable(f"{what}: Alpaca did not answer in time") from e
            except requests.exceptions.ConnectionError as e:
                raise DependencyUnavailable(f"{what}: cannot reach Alpaca at {self.url}") from e
            except requests.exceptions.RequestException as e:
                raise ProviderError(f"{what}: request to Alpaca failed: {e}") from e
            except (ValueError, TypeError, AttributeError, KeyError) as e:
                # alpaca-py indexes into the payload; a payload of another shape fails there.
                raise ProviderError(f"{what}: Alpaca payload has an unexpected shape: {e}") from e
            return _rows(raw, alpaca_symbol(request.symbol), what)

        return retry_call(once, what=what, policy=self.retry)

    def _client(self, *, crypto: bool) -> Any:
        if crypto:
            if self._crypto is None:
                self._crypto = self._prepare(
                    CryptoHistoricalDataClient(
                        api_key=self._key(self._api_key),
                        secret_key=self._key(self._secret_key),
                        raw_data=True,
                        url_override=self.url,
                    )
                )
            return self._crypto
        if self._stock is None:
            if self._api_key is None or self._secret_key is None:
                raise ConfigError(
                    "Alpaca stock bars need alpaca_api_key and alpaca_secret_key "
                    "(TRADEOS_ALPACA_API_KEY, TRADEOS_ALPACA_SECRET_KEY)"
                )
            self._stock = self._prepare(
                StockHistoricalDataClient(
                    api_key=self._api_key.get_secret_value(),
                    secret_key=self._secret_key.get_secret_value(),
                    raw_data=True,
                    url_override=self.url,
                )
            )
        return self._stock

    def _prepare(self, client: Any) -> Any:
        return prepare_client(client, timeout=self.timeout, before_request=self.limiter)

    @staticmethod
    def _key(secret: SecretStr | None) -> str | None:
        return secret.get_secret_value() if secret is not None else None

    def close(self) -> None:
        for client in (self._stock, self._crypto):
            if client is not None:
                client._session.close()

    def __repr__(self) -> str:
        keys = "set" if self._api_key is not None else "none"
        return f"AlpacaProvider(url={self.url!r}, feed={self.feed.value!r}, keys={keys})"


def prepare_client(client: Any, *, timeout: float, before_request: Callable[[], None]) -> Any:
    """An alpaca-py REST client whose every HTTP request first calls `before_request` (a rate
    limit, a circuit breaker) and has `timeout`.

    alpaca-py exposes neither a timeout nor a retry switch: the session gets an adapter that
    applies ours, and its fixed-sleep retry on 429/504 is disabled so our caller alone decides
    (jittered, honouring Retry-After)."""
    adapter = _EdgeAdapter(timeout, before_request)
    client._session.mount("http://", adapter)
    client._session.mount("https://", adapter)
    client._retry = 0
    return client


class _EdgeAdapter(HTTPAdapter):
    """Every request alpaca-py sends passes `before_request` and has a timeout."""

    def __init__(self, timeout: float, before_request: Callable[[], None]) -> None:
        super().__init__(max_retries=0)
        self._timeout = timeout
        self._before_request = before_request

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        self._before_request()
        return super().send(request, *args, **kwargs)


def secret_or_none(value: SecretStr | str | None) -> SecretStr | None:
    """A key as a `SecretStr` (so it never shows in a repr), None kept."""
    if value is None or isinstance(value, SecretStr):
        return value
    return SecretStr(value)


def api_error_message(error: APIError) -> str:
    """The `message` of Alpaca's JSON error body, else the start of the body as text."""
    try:
        return str(error.message)
    except (ValueError, TypeError, KeyError):
        return str(error)[:200]


def api_error(error: APIError, what: str) -> Exception:
    """One of our errors for an Alpaca HTTP error: 429 `ProviderRateLimited` with its
    Retry-After, 5xx `DependencyUnavailable` (retried), any other `ProviderError`."""
    response = error.response
    status = error.status_code
    message = api_error_message(error)
    if status == 429:
        headers = response.headers if response is not None else {}
        return ProviderRateLimited(
            f"{what}: Alpaca rate limit hit (429: {message})",
            retry_after=parse_retry_after(headers.get("Retry-After")),
        )
    if status is not None and status >= 500:
        return DependencyUnavailable(f"{what}: Alpaca error {status}: {message}")
    return ProviderError(f"{what}: Alpaca answered {status}: {message}")


def _rows(raw: object, symbol: str, what: str) -> list[dict[str, Any]]:
    """The bars of `symbol` in alpaca-py's raw result ({symbol: [bar, ...]}), shape-checked."""
    if not isinstance(raw, dict):
        raise ProviderError(f"{what}: Alpaca payload is {type(raw).__name__}, not bars by symbol")
    bars = raw.get(symbol, [])
    if not isinstance(bars, list) or not all(isinstance(b, dict) for b in bars):
        raise ProviderError(f"{what}: Alpaca bars for {symbol} are not a list of objects")
    for bar in bars:
        missing = [k for k in _FIELDS if k not in bar]
        if missing:
            raise ProviderError(f"{what}: an Alpaca bar lacks fields {missing}: {bar!r:.120}")
    return bars


def _frame(rows: list[dict[str, Any]], request: BarRequest) -> pd.DataFrame:
    columns = {**_FIELDS, **_OPTIONAL}
    data = pd.DataFrame(
        [{name: bar.get(key) for key, name in columns.items()} for bar in rows],
        columns=list(columns.values()),
    )
    try:
        ts = pd.to_datetime(data["ts"], utc=True, format="ISO8601")
    except (ValueError, TypeError) as e:
        raise ProviderError(f"Alpaca bars have unparseable timestamps: {e}") from e
    if request.timeframe is Timeframe.D1:
        ts = ts.dt.floor("D")
    data["ts"] = ts
    data.insert(0, "timeframe", request.timeframe.value)
    data.insert(0, "symbol", request.symbol)
    return data.drop_duplicates("ts")
