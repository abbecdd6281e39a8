"""Bar providers: where bars come from when no store has them.

Every provider implements `BarProvider.fetch_bars(symbol, timeframe, start, end)` and returns a
validated bar frame for [start, end) in UTC, oldest first. Bad input raises `ValidationError`
before any request; permanent provider errors raise `ProviderError`; transient ones are retried
with jittered backoff and raise a `TransientError` subclass when retries run out. An empty frame
means the source answered with no bars, never that something failed.
"""

from typing import TYPE_CHECKING, Any

from tradeos_lab.providers.base import BarProvider, BarRequest, RateLimiter, TokenBucket
from tradeos_lab.providers.coinbase import CoinbaseProvider
from tradeos_lab.providers.files import FileReplayProvider, read_bar_file, save_bars
from tradeos_lab.providers.synthetic import SyntheticProvider

if TYPE_CHECKING:
    from tradeos_lab.providers.alpaca import AlpacaProvider

__all__ = [
    "AlpacaProvider",
    "BarProvider",
    "BarRequest",
    "CoinbaseProvider",
    "FileReplayProvider",
    "RateLimiter",
    "SyntheticProvider",
    "TokenBucket",
    "read_bar_file",
    "save_bars",
]


def __getattr__(name: str) -> Any:
    # alpaca-py (and the websockets stack it imports) loads only when Alpaca is used.
    if name == "AlpacaProvider":
        from tradeos_lab.providers.alpaca import AlpacaProvider

        return AlpacaProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
