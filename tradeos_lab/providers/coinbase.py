"""Coinbase Exchange public candles (`GET /products/{product_id}/candles`) over httpx.

The documented contract: `granularity` in seconds, one of {60, 300, 900, 3600, 21600, 86400};
`start`/`end` in ISO 8601 with `end` inclusive; at most 300 candles per request (more is
rejected); rows `[time, low, high, open, close, volume]` newest first; no row for an interval
without trades; errors as `{"message": ...}`; public endpoints limited to 10 requests/s per IP
(bursts of 15), answered with 429 beyond that.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd

from tradeos_lab.errors import (
    DependencyUnavailable,
    ProviderError,
    ProviderRateLimited,
    ValidationError,
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
from tradeos_lab.symbols import Timeframe

log = logging.getLogger(__name__)

MAX_CANDLES = 300
GRANULARITIES = {
    Timeframe.M1: 60,
    Timeframe.M5: 300,
    Timeframe.M15: 900,
    Timeframe.H1: 3600,
    Timeframe.D1: 86400,
}
DEFAULT_URL = "https://api.exchange.coinbase.com"


def granularity(timeframe: Timeframe | str) -> int:
    """Coinbase's granularity for a timeframe; `ValidationError` when Coinbase has none."""
    tf = Timeframe.parse(timeframe)
    try:
        return GRANULARITIES[tf]
    except KeyError:
        served = ", ".join(t.value for t in GRANULARITIES)
        raise ValidationError(
            f"Coinbase serves no {tf.value} candles; use one of {served}"
        ) from None


def product_id(symbol: str) -> str:
    """Coinbase spells pairs BASE-QUOTE; accept BTC/USD as well."""
    return symbol.replace("/", "-")


class CoinbaseProvider(HttpProvider):
    """Bars from Coinbase Exchange public candles, paged 300 at a time under a rate limit."""

    name = "coinbase"

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        # 10/s with bursts of 15 is the documented public limit; a shared (flags-tier) limiter
        # replaces this bucket when several processes share one IP.
        self.limiter: RateLimiter = limiter or TokenBucket(rate=10.0, capacity=15.0)
        self.retry = retry or RetryPolicy()
        self._owns_client = client is None
        self._client = client or httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": "tradeos-lab", "Accept": "application/json"},
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> CoinbaseProvider:
        return cls(settings.coinbase_url, **kwargs)

    def fetch_bars(
        self, symbol: str, timeframe: Timeframe | str, start: TimeLike, end: TimeLike
    ) -> pd.DataFrame:
        """Bars opening in [start, end); empty only when Coinbase answered `[]` for every page."""
        request = BarRequest(symbol, timeframe, start, end)
        step = granularity(request.timeframe)
        rows: list[list[float]] = []
        for page_start, page_end in self.pages(request):
            rows.extend(self._page(request, step, page_start, page_end))
        frame = pd.DataFrame(rows, columns=["time", "low", "high", "open", "close", "volume"])
        frame = pd.DataFrame(
            {
                "symbol": request.symbol,
                "timeframe": request.timeframe.value,
                "ts": pd.to_datetime(frame["time"].astype("int64"), unit="s", utc=True),
                "open": frame["open"],
                "high": frame["high"],
                "low": frame["low"],
                "close": frame["close"],
                "volume": frame["volume"],
            }
        )
        # Pages overlap nowhere, but a candle may precede a page's start (documented), so the
        # same candle can come twice; keep one.
        frame = frame.drop_duplicates("ts")
        return finish(frame, request, "Coinbase")

    @staticmethod
    def pages(request: BarRequest) -> Iterator[tuple[int, int]]:
        """(start, inclusive end) in epoch seconds of each request of at most 300 candles."""
        step = granularity(request.timeframe)
        first, last = request.first_open, request.last_open
        for page_start in range(first, last + 1, MAX_CANDLES * step):
            yield page_start, min(page_start + (MAX_CANDLES - 1) * step, last)

    def _page(
        self, request: BarRequest, step: int, page_start: int, page_end: int
    ) -> list[list[float]]:
        path = f"/products/{product_id(request.symbol)}/candles"
        params = {
            "granularity": str(step),
            "start": _iso(page_start),
            "end": _iso(page_end),
        }
        what = f"Coinbase candles {request.symbol} {request.timeframe.value} from {params['start']}"

        def once() -> list[list[float]]:
            self.limiter()
            payload = self._get(path, params, what)
            return [row for row in _candles(payload, what) if page_start <= row[0] <= page_end]

        return retry_call(once, what=what, policy=self.retry)

    def _get(self, path: str, params: dict[str, str], what: str) -> object:
        try:
            response = self._client.get(path, params=params)
        except httpx.TimeoutException as e:
            raise DependencyUnavailable(f"{what}: Coinbase did not answer in time ({e!r})") from e
        except httpx.TransportError as e:
            raise DependencyUnavailable(f"{what}: cannot reach Coinbase at {self.url}: {e}") from e
        status = response.status_code
        if status == 429:
            raise ProviderRateLimited(
                f"{what}: Coinbase rate limit hit (429: {_message(response)})",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 500:
            raise DependencyUnavailable(f"{what}: Coinbase error {status}: {_message(response)}")
        if status != 200:
            raise ProviderError(f"{what}: Coinbase answered {status}: {_message(response)}")
        try:
            return response.json()
        except ValueError as e:
            raise ProviderError(f"{what}: Coinbase answered 200 with malformed JSON: {e}") from e

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __repr__(self) -> str:
        return f"CoinbaseProvider(url={self.url!r})"


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _candles(payload: object, what: str) -> list[list[float]]:
    """Check the documented shape: a list of 6 finite numbers per row, integer time first."""
    if not isinstance(payload, list):
        raise ProviderError(
            f"{what}: expected a JSON list of candles, got {type(payload).__name__}"
        )
    rows: list[list[float]] = []
    for row in payload:
        if (
            not isinstance(row, list)
            or len(row) != 6
            or not all(_is_number(v) for v in row)
            or float(row[0]) != int(row[0])
        ):
            raise ProviderError(
                f"{what}: a candle is not [time, low, high, open, close, volume]: {row!r:.120}"
            )
        rows.append([int(row[0]), *(float(v) for v in row[1:])])
    return rows


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _message(response: httpx.Response) -> str:
    """The documented `{"message": ...}` of an error answer, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return response.text[:200]
