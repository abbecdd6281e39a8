"""Seeded synthetic bars for demos and tests: no network, yet shaped like a real market.

Every number comes from a counter-based hash of (seed, symbol, timeframe, stream, bar index), so a
bar does not depend on which range was asked for: the same request always gives the same bars and
overlapping requests agree bit for bit on the bars they share.

How a series is built (each timeframe is its own series):
- Bars are grouped in blocks of 256. The log price at each block boundary is multi-octave value
  noise (Brownian-like over days to years, but bounded, so prices stay positive and plausible).
- Inside a block the path is a Brownian bridge between the two boundary levels, driven by per-bar
  shocks whose size follows a two-state Markov switch (calm/volatile) started from its stationary
  distribution at each block; a close equals the next bar's open.
- A constant drift is added; volume follows a U-curve over the UTC day, rises with the regime and
  with the size of the move; a few bars are missing, singly or in short outages.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import numpy.typing as npt
import pandas as pd

from tradeos_lab.providers.base import BarRequest, TimeLike, finish
from tradeos_lab.symbols import Timeframe

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

BLOCK = 256
OUTAGE_CELL = 32
_YEAR = 365.25 * 86400
_REFERENCE = 1_577_836_800  # 2020-01-01T00:00Z: drift is measured from here
# Two-state regime: per-bar switch probabilities and volatility multipliers.
_P_CALM_TO_VOLATILE = 0.01
_P_VOLATILE_TO_CALM = 0.04
_VOLATILE_SHARE = _P_CALM_TO_VOLATILE / (_P_CALM_TO_VOLATILE + _P_VOLATILE_TO_CALM)
_CALM, _VOLATILE = 0.8, 2.2
# Normalise so the average variance matches the requested volatility.
_REGIME_RMS = math.sqrt((1 - _VOLATILE_SHARE) * _CALM**2 + _VOLATILE_SHARE * _VOLATILE**2)
_CHUNK_BLOCKS = 2048  # bounds temporary memory for long ranges

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: U64) -> U64:
    """splitmix64's finaliser: a fast, well-distributed bijection on uint64."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


class _Streams:
    """Independent uniform and normal draws per (stream name, integer index)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _stream(self, name: str) -> np.uint64:
        digest = hashlib.blake2b(self._key + b"|" + name.encode(), digest_size=8).digest()
        return np.uint64(int.from_bytes(digest, "little"))

    def uniform(self, name: str, index: I64) -> F64:
        bits = _mix(index.astype(np.int64).view(np.uint64) ^ self._stream(name))
        return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)

    def normal(self, name: str, index: I64) -> F64:
        u1 = self.uniform(name + ".a", index)
        u2 = self.uniform(name + ".b", index)
        return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


class SyntheticProvider:
    """Deterministic, realistic-looking bars for any symbol, timeframe and range."""

    name = "synthetic"

    def __init__(
        self,
        seed: int = 0,
        *,
        annual_volatility: float = 0.6,
        annual_drift: float = 0.05,
        gap_rate: float = 0.002,
        outage_rate: float = 0.001,
        base_price: float | None = None,
    ) -> None:
        if annual_volatility <= 0 or not 0 <= gap_rate < 1 or not 0 <= outage_rate < 1:
            raise ValueError("volatility must be positive and gap rates in [0, 1)")
        if base_price is not None and not base_price > 0:
            raise ValueError("base_price must be positive")
        self.seed = int(seed)
        self.annual_volatility = annual_volatility
        self.annual_drift = annual_drift
        self.gap_rate = gap_rate
        self.outage_rate = outage_rate
        self.base_price = base_price

    def fetch_bars(
        self, symbol: str, timeframe: Timeframe | str, start: TimeLike, end: TimeLike
    ) -> pd.DataFrame:
        """Bars opening in [start, end), minus the series' gaps."""
        request = BarRequest(symbol, timeframe, start, end)
        step = request.step
        first, last = request.first_open // step, request.last_open // step
        if first > last:
            return finish(self._frame(request, {}), request, "synthetic")
        parts: list[dict[str, npt.NDArray[np.generic]]] = []
        first_block, last_block = first // BLOCK, last // BLOCK
        for chunk in range(first_block, last_block + 1, _CHUNK_BLOCKS):
            blocks = np.arange(chunk, min(chunk + _CHUNK_BLOCKS, last_block + 1), dtype=np.int64)
            parts.append(self._blocks(request, blocks, first, last))
        columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return finish(self._frame(request, columns), request, "synthetic")

    def _blocks(
        self, request: BarRequest, blocks: I64, first: int, last: int
    ) -> dict[str, npt.NDArray[np.generic]]:
        step = request.step
        streams = _Streams(f"{self.seed}|{request.symbol}|{request.timeframe.value}".encode())
        sigma = self.annual_volatility * math.sqrt(step / _YEAR)
        index = blocks[:, None] * BLOCK + np.arange(BLOCK, dtype=np.int64)[None, :]

        # Boundary levels and the bridge between them.
        anchors = self._anchors(streams, np.append(blocks, blocks[-1] + 1), step, sigma)
        regime = self._regimes(streams, blocks, index)
        shocks = sigma * regime * streams.normal("shock", index)
        walk = np.concatenate([np.zeros((len(blocks), 1)), np.cumsum(shocks, axis=1)], axis=1)
        frac = np.arange(BLOCK + 1, dtype=np.float64)[None, :] / BLOCK
        rise = (anchors[1:] - anchors[:-1])[:, None]
        path = anchors[:-1, None] + walk - frac * (walk[:, -1:] - rise)
        drift = self.annual_drift * step / _YEAR
        opens_at = np.append(index, index[:, -1:] + 1, axis=1)
        path = path + drift * (opens_at - _REFERENCE // step)

        log_open, log_close = path[:, :-1], path[:, 1:]
        open_, close = np.exp(log_open), np.exp(log_close)
        wick = 0.5 * sigma * regime
        high = np.maximum(open_, close) * np.exp(wick * np.abs(streams.normal("high", index)))
        low = np.minimum(open_, close) * np.exp(-wick * np.abs(streams.normal("low", index)))

        day = ((index * step) % 86400 + step / 2) / 86400
        u_curve = 0.55 + 3.0 * (day - 0.5) ** 2
        move = np.abs(log_close - log_open) / sigma
        base_volume = 1e6 * (0.2 + streams.uniform("volume.base", np.zeros(1, np.int64))[0])
        volume = (
            base_volume
            * (step / 86400)
            * u_curve
            * regime
            * (0.6 + 0.4 * move)
            * np.exp(0.35 * streams.normal("volume", index))
        )
        trades = np.maximum(1, np.round(volume / (50.0 + 20.0 * regime))).astype(np.int64)

        gap = streams.uniform("gap", index) < self.gap_rate
        gap |= streams.uniform("outage", index // OUTAGE_CELL) < self.outage_rate
        keep = ~gap & (index >= first) & (index <= last)
        return {
            "index": index[keep],
            "open": open_[keep],
            "high": high[keep],
            "low": low[keep],
            "close": close[keep],
            "volume": volume[keep],
            "vwap": ((high + low + close) / 3.0)[keep],
            "trade_count": trades[keep],
        }

    def _anchors(self, streams: _Streams, blocks: I64, step: int, sigma: float) -> F64:
        """Log price at block boundaries: value noise over octaves up to about four years."""
        if self.base_price is not None:
            base = math.log(self.base_price)
        else:  # 10 to about 3,000 depending on the symbol
            base = math.log(10.0) * (1.0 + 2.5 * streams.uniform("base", np.zeros(1, np.int64))[0])
        block_seconds = BLOCK * step
        octaves = max(1, min(12, round(math.log2(max(1.0, 4 * _YEAR / block_seconds)))))
        amplitude = sigma * math.sqrt(BLOCK / 2)
        level = np.full(len(blocks), base, dtype=np.float64)
        for k in range(octaves):
            spacing = 1 << k
            cell = np.floor_divide(blocks, spacing)
            t = (blocks - cell * spacing) / spacing
            left = streams.normal(f"anchor.{k}", cell)
            right = streams.normal(f"anchor.{k}", cell + 1)
            level += amplitude * math.sqrt(spacing) * (left + (right - left) * t)
        return level

    def _regimes(self, streams: _Streams, blocks: I64, index: I64) -> F64:
        """Volatility multiplier per bar from a calm/volatile Markov chain, one chain per block."""
        switch = streams.uniform("regime.switch", index)
        state = streams.uniform("regime.start", blocks) < _VOLATILE_SHARE
        out = np.empty(index.shape, dtype=bool)
        for j in range(BLOCK):
            odds = np.where(state, _P_VOLATILE_TO_CALM, _P_CALM_TO_VOLATILE)
            state = state ^ (switch[:, j] < odds)
            out[:, j] = state
        return np.where(out, _VOLATILE, _CALM) / _REGIME_RMS

    @staticmethod
    def _frame(request: BarRequest, columns: dict[str, npt.NDArray[np.generic]]) -> pd.DataFrame:
        if not columns:
            columns = {
                "index": np.zeros(0, np.int64),
                **{c: np.zeros(0) for c in ("open", "high", "low", "close", "volume", "vwap")},
                "trade_count": np.zeros(0, np.int64),
            }
        index = columns.pop("index").astype(np.int64)
        return pd.DataFrame(
            {
                "symbol": request.symbol,
                "timeframe": request.timeframe.value,
                "ts": pd.to_datetime(index * request.step, unit="s", utc=True),
                **columns,
            }
        )

    def __repr__(self) -> str:
        return f"SyntheticProvider(seed={self.seed})"
