"""The backfill's monitoring queries as DataFrames: bars per symbol, data freshness, staleness.

They read the store's `coverage()` (one grouped query on either store), so they cost the same on
the lake and on PostgreSQL and work on any `BarStore`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import pandas as pd

from tradeos_lab.bars import BarStore
from tradeos_lab.errors import ValidationError
from tradeos_lab.marketdata.subscriptions import SubscriptionManager
from tradeos_lab.symbols import Timeframe, validate_symbols

_SECONDS = {tf.value: tf.seconds for tf in Timeframe}


def bars_per_symbol(store: BarStore, symbols: Iterable[str] | None = None) -> pd.DataFrame:
    """Symbol, timeframe, bars, earliest, latest: most data first."""
    frame = store.coverage(symbols)
    frame = frame.loc[:, ["symbol", "timeframe", "bars", "earliest", "latest"]]
    return frame.sort_values(["bars", "symbol"], ascending=[False, True]).reset_index(drop=True)


def bar_totals(store: BarStore) -> dict[str, int]:
    """Total bars and distinct symbols in the store (how far the backfill got)."""
    frame = store.coverage()
    return {"total_bars": int(frame["bars"].sum()), "total_symbols": int(frame["symbol"].nunique())}


def freshness(
    store: BarStore,
    symbols: Iterable[str] | None = None,
    *,
    timeframe: Timeframe | str | None = None,
    now: datetime | None = None,
    stale_after_bars: float = 3.0,
    subscriptions: SubscriptionManager | None = None,
) -> pd.DataFrame:
    """Per symbol and timeframe: latest bar, staleness (now - latest bar's close) and whether it
    is stale (more than `stale_after_bars` bars behind), freshest first. With `subscriptions`,
    pairs someone needs but the store lacks appear as stale with no latest bar."""
    if stale_after_bars <= 0:
        raise ValidationError("stale_after_bars must be > 0")
    moment = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    if moment.tzinfo is None:
        raise ValidationError("now must be timezone-aware")
    frame = store.coverage(symbols).loc[:, ["symbol", "timeframe", "latest", "bars"]]
    if subscriptions is not None:
        needed = subscriptions.needed(timeframe)
        if symbols is not None:
            needed = needed[needed["symbol"].isin(validate_symbols(symbols))]
        have = set(zip(frame["symbol"], frame["timeframe"], strict=True))
        absent = [
            (s, t)
            for s, t in zip(needed["symbol"], needed["timeframe"], strict=True)
            if (s, t) not in have
        ]
        if absent:
            extra = pd.DataFrame(
                {
                    "symbol": [s for s, _ in absent],
                    "timeframe": [t for _, t in absent],
                    "latest": pd.Series([pd.NaT] * len(absent), dtype="datetime64[ns, UTC]"),
                    "bars": 0,
                }
            )
            frame = pd.concat([frame, extra], ignore_index=True) if len(frame) else extra
    if timeframe is not None:
        frame = frame[frame["timeframe"] == Timeframe.parse(timeframe).value]
    step = pd.to_timedelta(frame["timeframe"].map(_SECONDS).astype("float64"), unit="s")
    closed = pd.to_datetime(frame["latest"], utc=True) + step
    staleness = moment.tz_convert("UTC") - closed
    staleness = staleness.mask(staleness < pd.Timedelta(0), pd.Timedelta(0))  # bar in progress
    out = pd.DataFrame(
        {
            "symbol": frame["symbol"].astype("string"),
            "timeframe": frame["timeframe"].astype("string"),
            "latest": pd.to_datetime(frame["latest"], utc=True),
            "bars": frame["bars"].astype("int64"),
            "staleness": staleness,
            "staleness_bars": staleness / step,
        }
    )
    out["stale"] = ~(out["staleness_bars"] <= stale_after_bars)  # NaN (no bars) counts as stale
    out["staleness_bars"] = out["staleness_bars"].astype("float64").round(2)
    out = out.sort_values(["staleness", "symbol"], na_position="last", kind="stable")
    return out.reset_index(drop=True)
