"""Interval arithmetic shared by the three-tier reader and the backfill.

Both turn a store's gaps into provider requests the same way: drop the holes the provider already
answered empty for (the lake's gap ledger), merge gaps that lie close together, then cut what is
left into requests of a bounded number of bars. Spans are half-open `[start, end)` UTC timestamps
on the timeframe's grid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import pandas as pd

from tradeos_lab.symbols import Timeframe

Span = tuple[pd.Timestamp, pd.Timestamp]
_NS = 1_000_000_000


@runtime_checkable
class GapLedger(Protocol):
    """A bar store that remembers the gaps its writers could not fill (the lake does)."""

    def record_gaps(
        self, symbol: str, timeframe: Timeframe | str, start: datetime, end: datetime
    ) -> pd.DataFrame: ...

    def gap_ledger(
        self,
        symbol: str | None = None,
        timeframe: Timeframe | str | None = None,
        *,
        open_only: bool = False,
    ) -> pd.DataFrame: ...


def utc(value: object) -> pd.Timestamp:
    """A UTC timestamp from whatever a store returned (aware, naive-as-UTC, numpy)."""
    ts = pd.Timestamp(value)  # type: ignore[arg-type]
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def floor_to_grid(ts: pd.Timestamp, timeframe: Timeframe) -> pd.Timestamp:
    """The open of the bar containing `ts`."""
    step = timeframe.seconds * _NS
    return pd.Timestamp((ts.value // step) * step, tz="UTC")


def ceil_to_grid(ts: pd.Timestamp, timeframe: Timeframe) -> pd.Timestamp:
    """The first bar opening at or after `ts`."""
    step = timeframe.seconds * _NS
    return pd.Timestamp(-(-ts.value // step) * step, tz="UTC")


def spans_of(gaps: pd.DataFrame) -> list[Span]:
    """`gaps()` rows (gap_start, gap_end) as spans, oldest first."""
    if gaps.empty:
        return []
    return sorted((utc(s), utc(e)) for s, e in zip(gaps["gap_start"], gaps["gap_end"], strict=True))


def subtract(spans: Sequence[Span], holes: Iterable[Span]) -> list[Span]:
    """`spans` minus every hole; pieces keep their order."""
    cuts = sorted(holes)
    out: list[Span] = []
    for start, end in spans:
        cursor = start
        for hole_start, hole_end in cuts:
            if hole_end <= cursor or hole_start >= end:
                continue
            if hole_start > cursor:
                out.append((cursor, hole_start))
            cursor = max(cursor, hole_end)
            if cursor >= end:
                break
        if cursor < end:
            out.append((cursor, end))
    return out


def plan_requests(
    spans: Sequence[Span], timeframe: Timeframe, *, max_bars: int, merge_within_bars: int = 0
) -> list[Span]:
    """Provider requests covering `spans`: neighbours at most `merge_within_bars` bars apart are
    merged (one request instead of many tiny ones), then each is cut to `max_bars` bars."""
    if max_bars < 1:
        raise ValueError("max_bars must be >= 1")
    step = timedelta(seconds=timeframe.seconds)
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start - merged[-1][1] <= step * merge_within_bars:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    out: list[Span] = []
    width = step * max_bars
    for start, end in merged:
        cursor = start
        while cursor < end:
            out.append((cursor, min(cursor + width, end)))
            cursor = cursor + width
    return out


def bars_in(spans: Iterable[Span], timeframe: Timeframe) -> int:
    """Grid points covered by `spans` (spans are grid-aligned)."""
    step = timeframe.seconds
    return sum(max(0, int((e - s).total_seconds()) // step) for s, e in spans)


def known_holes(
    store: object,
    symbol: str,
    timeframe: Timeframe,
    *,
    older_than: pd.Timestamp,
) -> list[Span]:
    """Open gaps of the store's ledger that end before `older_than` (recent ones are re-asked:
    a provider may publish a bar late). Empty when the store keeps no ledger."""
    if not isinstance(store, GapLedger):
        return []
    ledger = store.gap_ledger(symbol, timeframe, open_only=True)
    if ledger.empty:
        return []
    return [
        (utc(s), utc(e))
        for s, e in zip(ledger["gap_start"], ledger["gap_end"], strict=True)
        if utc(e) <= older_than
    ]
