"""Three-tier bar reads: cache -> bar store -> provider, writing back down on a miss.

What a request means. `get_bars(symbol, timeframe, start, end, limit)` returns the bars opening in
`[start, end)`, oldest first, and with `limit` only the latest `limit` of them, exactly like
`BarStore.read_bars`; with neither `start` nor `limit`, the latest `settings.limits.cache_bars`
(500). Missing bars are found with the store's gap detection, which is calendar-naive (every grid
point is expected, as in a 24/7 market): for a market with sessions the provider is asked once
for each closed stretch, answers empty, and the gap ledger remembers it. When holes leave fewer
than `limit` bars, the read reaches further back (at most `MAX_EXTENSIONS` times).

A *tail* read (no `end`, or an `end` in the bar in progress) is about the present: the store and the
provider are asked for completed bars only, and the answer is written back into the cache, which
holds the tail of each series. Only tail reads write the cache, and they always write the whole
last-500 window, so the cached block is always the series' latest bars with no hole the store
could have filled: a request inside its span can be answered from it alone.

Tiers:
1. cache: a hit when the block holds the whole answer (back to `start`, or `limit` bars) and, for a
   tail read, the last completed bar (`fresh_within_bars`), else the last bar before `end`.
2. store: `read_bars` + `gaps`; a hit when nothing is missing, or only holes the provider already
   answered empty for (the lake's gap ledger) and that are older than `recheck_after`.
3. provider: asked only for the missing spans (cut into requests of at most `max_request_bars`);
   its bars go into the store; holes it leaves are recorded in the store's gap ledger.

Hits and misses per tier are Prometheus counters (`tradeos_bar_reads_total{tier,result}`, served by
every process's `/metrics`) and, for this reader alone, `stats()`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import pandas as pd
from prometheus_client import Counter

from tradeos_lab.bars import BarStore, empty_bars, utc_timestamp
from tradeos_lab.errors import ValidationError
from tradeos_lab.marketdata.ranges import (
    GapLedger,
    Span,
    ceil_to_grid,
    floor_to_grid,
    known_holes,
    plan_requests,
    spans_of,
    subtract,
)
from tradeos_lab.providers.base import BarProvider
from tradeos_lab.symbols import Timeframe, validate_symbol

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab
    from tradeos_lab.tiers.cache import Cache

log = logging.getLogger(__name__)

TIERS: Final = ("cache", "store", "provider")
MAX_LIMIT: Final = 10_000_000
MAX_EXTENSIONS: Final = 3  # times a count read reaches further back past unfillable holes

BAR_READS = Counter(
    "tradeos_bar_reads",
    "Three-tier bar reads answered (hit) or passed on (miss) by each tier",
    ["tier", "result"],
)
PROVIDER_BARS = Counter(
    "tradeos_bar_provider_bars", "Bars fetched from a provider by three-tier reads", ["provider"]
)

Clock = Callable[[], pd.Timestamp]
_PLURAL: Final = {"hit": "hits", "miss": "misses"}


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


class BarReader:
    """Reads bars through the cache, the bar store and (optionally) a provider.

    `provider=None` makes the store the last tier: missing bars are then simply absent.
    """

    def __init__(
        self,
        cache: Cache,
        store: BarStore,
        provider: BarProvider | None = None,
        *,
        fresh_within_bars: int | None = 1,
        recheck_after: timedelta = timedelta(hours=6),
        max_request_bars: int = 100_000,
        clock: Clock = _now,
    ) -> None:
        if fresh_within_bars is not None and fresh_within_bars < 1:
            raise ValidationError("fresh_within_bars must be >= 1 (or None to trust the TTL)")
        if max_request_bars < 1:
            raise ValidationError("max_request_bars must be >= 1")
        self.cache = cache
        self.store = store
        self.provider = provider
        self.fresh_within_bars = fresh_within_bars
        self.recheck_after = recheck_after
        self.max_request_bars = max_request_bars
        self.window_bars = cache.settings.limits.cache_bars
        self._clock = clock
        self._lock = threading.Lock()
        self._stats: dict[str, int] = {}
        self.reset_stats()

    @classmethod
    def from_lab(cls, lab: Lab, provider: BarProvider | None = None, **kwargs: Any) -> BarReader:
        """The reader over a connected lab's cache and lake."""
        return cls(lab.cache, lab.lake, provider, **kwargs)

    # ---- the read path ----------------------------------------------------------------------

    def get_bars(
        self,
        symbol: str,
        timeframe: Timeframe | str,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Bars opening in [start, end), oldest first; with `limit`, the latest `limit` of them.

        Raises `ValidationError` for a bad symbol, timeframe, limit or a start after end, before
        any tier is touched; provider errors propagate (a failed fetch never reads as no data).
        """
        symbol = validate_symbol(symbol)
        tf = Timeframe.parse(timeframe)
        lo = None if start is None else utc_timestamp(start, "start")
        hi = None if end is None else utc_timestamp(end, "end")
        if lo is not None and hi is not None and lo > hi:
            raise ValidationError(f"start {lo.isoformat()} is after end {hi.isoformat()}")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT
        ):
            raise ValidationError(f"limit must be an int in [1, {MAX_LIMIT}], got {limit!r}")
        if lo is not None and lo == hi:
            return empty_bars()

        in_progress = floor_to_grid(self._clock(), tf)
        tail = hi is None or hi > in_progress
        stop = in_progress if tail else hi  # completed bars only
        assert stop is not None
        count = None if lo is not None else (limit or self.window_bars)
        keep = limit if limit is not None else count  # how many of the newest bars to return

        cached = self._from_cache(symbol, tf, lo=lo, hi=hi, stop=stop, count=count, tail=tail)
        if cached is not None:
            self._count("cache", "hit")
            return _tail(cached, keep)
        self._count("cache", "miss")

        # A tail read fills the whole cache window so the block written back is the true tail.
        want = max(count or 0, self.window_bars) if tail else count
        bars = self._from_store(symbol, tf, lo=lo, stop=stop, count=want)
        if tail and not bars.empty:
            self.cache.write_bars(bars.tail(self.window_bars))
        return _tail(_between(bars, lo, hi), keep)

    def _from_cache(
        self,
        symbol: str,
        tf: Timeframe,
        *,
        lo: pd.Timestamp | None,
        hi: pd.Timestamp | None,
        stop: pd.Timestamp,
        count: int | None,
        tail: bool,
    ) -> pd.DataFrame | None:
        """The cached bars answering the request, or None on a miss."""
        # "The latest N" needs only the block's tail (GETRANGE), the hot path of live readers.
        latest_only = lo is None and hi is None
        cached = self.cache.get_bars(symbol, tf, limit=count if latest_only else None)
        if cached.empty:
            return None
        step = timedelta(seconds=tf.seconds)
        newest = cached["ts"].iloc[-1]
        if tail:
            if self.fresh_within_bars is not None and newest < stop - step * self.fresh_within_bars:
                return None
        elif newest < ceil_to_grid(stop, tf) - step:  # the last bar opening before `end`
            return None
        answer = _between(cached, lo, hi)
        if lo is not None:
            return answer if cached["ts"].iloc[0] <= ceil_to_grid(lo, tf) else None
        return answer if count is not None and len(answer) >= count else None

    def _from_store(
        self,
        symbol: str,
        tf: Timeframe,
        *,
        lo: pd.Timestamp | None,
        stop: pd.Timestamp,
        count: int | None,
    ) -> pd.DataFrame:
        """Store bars in [lo, stop) and at least the latest `count` before stop, completed from
        the provider where the store has gaps."""
        step = timedelta(seconds=tf.seconds)
        starts: list[pd.Timestamp] = [] if lo is None else [lo]
        latest: pd.DataFrame | None = None
        if count is not None:
            latest = self.store.read_bars(symbol, tf, end=stop, limit=count)
            # Fewer stored than wanted: start with the `count` grid points before stop.
            starts.append(
                latest["ts"].iloc[0]
                if len(latest) == count
                else min([stop - step * count, *latest["ts"].iloc[:1]])
            )
        start = min(starts)
        if start >= stop:
            self._count("store", "hit")
            return empty_bars()
        reuse = latest is not None and len(latest) > 0 and latest["ts"].iloc[0] == start
        bars, missed = self._complete(symbol, tf, start, stop, latest if reuse else None)
        # Holes the provider cannot fill leave fewer than `count` bars: reach further back.
        for _ in range(MAX_EXTENSIONS):
            if count is None or len(bars) >= count or self.provider is None:
                break
            earlier = start - step * 2 * (count - len(bars))
            older, more_missed = self._complete(symbol, tf, earlier, start, None)
            missed |= more_missed
            if older.empty:
                break  # nothing older anywhere: a young series
            bars = pd.concat([older, bars], ignore_index=True) if len(bars) else older
            start = earlier
        self._count("store", "miss" if missed else "hit")
        return bars

    def _complete(
        self,
        symbol: str,
        tf: Timeframe,
        start: pd.Timestamp,
        stop: pd.Timestamp,
        stored: pd.DataFrame | None,
    ) -> tuple[pd.DataFrame, bool]:
        """Bars in [start, stop) from the store, its gaps asked of the provider; True when
        something was missing (a store miss)."""
        if stored is None:
            stored = self.store.read_bars(symbol, tf, start, stop)
        missing = spans_of(self.store.gaps(symbol, tf, start, stop))
        if missing:
            recent = self._clock() - self.recheck_after
            holes = known_holes(self.store, symbol, tf, older_than=recent)
            missing = subtract(missing, holes)
        if not missing:
            return stored, False
        if self.provider is None:
            return stored, True
        fetched = self._from_provider(symbol, tf, missing)
        parts = [f for f in (stored, *fetched) if not f.empty]
        if not parts:
            return stored, True
        combined = pd.concat(parts, ignore_index=True)
        combined = combined.drop_duplicates("ts", keep="last").sort_values("ts", kind="stable")
        return combined.reset_index(drop=True), True

    def _from_provider(self, symbol: str, tf: Timeframe, missing: list[Span]) -> list[pd.DataFrame]:
        """Ask the provider for exactly the missing spans; store what it returns."""
        assert self.provider is not None
        fetched: list[pd.DataFrame] = []
        asked = plan_requests(missing, tf, max_bars=self.max_request_bars)
        log.debug(
            "%s %s: asking %s for %d missing span(s)",
            symbol,
            tf.value,
            self.provider.name,
            len(asked),
        )
        holes_left = False
        for start, end in asked:
            bars = self.provider.fetch_bars(symbol, tf, start, end)
            expected = int((end - start).total_seconds()) // tf.seconds
            holes_left |= len(bars) < expected
            if bars.empty:
                self._count("provider", "miss")
                continue
            self._count("provider", "hit")
            self._add("provider_bars", len(bars))
            PROVIDER_BARS.labels(provider=self.provider.name).inc(len(bars))
            self.store.write_bars(bars)
            fetched.append(bars)
        if holes_left and isinstance(self.store, GapLedger):
            # Remembered so the next read does not ask again for what the provider lacks.
            self.store.record_gaps(symbol, tf, asked[0][0], asked[-1][1])
        return fetched

    # ---- counters ---------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """This reader's counts: `{tier}_hits`, `{tier}_misses` per tier and `provider_bars`."""
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = {f"{t}_{r}": 0 for t in TIERS for r in ("hits", "misses")}
            self._stats["provider_bars"] = 0

    def _count(self, tier: str, result: str) -> None:
        BAR_READS.labels(tier=tier, result=result).inc()
        self._add(f"{tier}_{_PLURAL[result]}", 1)

    def _add(self, name: str, n: int) -> None:
        with self._lock:
            self._stats[name] = self._stats.get(name, 0) + n

    def __repr__(self) -> str:
        provider = self.provider.name if self.provider is not None else "none"
        return f"BarReader(store={type(self.store).__name__}, provider={provider})"


def _between(bars: pd.DataFrame, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> pd.DataFrame:
    if lo is None and hi is None:
        return bars
    inside = pd.Series(True, index=bars.index)
    if lo is not None:
        inside &= bars["ts"] >= lo
    if hi is not None:
        inside &= bars["ts"] < hi
    return bars.loc[inside].reset_index(drop=True)


def _tail(bars: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    if limit is None or len(bars) <= limit:
        return bars
    return bars.iloc[-limit:].reset_index(drop=True)
